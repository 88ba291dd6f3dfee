"""HTTP → service translation: paths, cookies, status codes. No business rules here.

The pixel and the operational endpoints live here; each other concern brings its own
table of routes (collect, segment, email, tracker).
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import orjson

from collector.collect import CollectRoutes
from collector.edge import NO_STORE, context_for, visitor_cookie
from collector.email import EmailRoutes
from collector.http import Request, Response
from collector.metrics import Metrics
from collector.segment import SegmentRoutes
from collector.service import CollectorService, Tally
from collector.sinks.base import EventSink
from collector.tracker import TrackerRoutes
from trackpipe.settings import Settings

# The classic 43-byte 1×1 transparent GIF.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")

Handler = Callable[[Request], Response]


class Routes:
    def __init__(
        self, settings: Settings, service: CollectorService, sink: EventSink, metrics: Metrics
    ) -> None:
        self._settings = settings
        self._service = service
        self._sink = sink
        self._metrics = metrics
        self._table: dict[tuple[str, str], Handler] = {
            ("GET", "/i"): self.pixel,
            ("GET", "/healthz"): self.healthz,
            ("GET", "/readyz"): self.readyz,
            ("GET", "/metrics"): self.metrics,
        }
        self._table |= CollectRoutes(settings, service, sink).table()
        self._table |= SegmentRoutes(settings, service, sink, metrics).table()
        self._table |= EmailRoutes(settings, service, PIXEL_GIF).table()
        self._table |= TrackerRoutes().table()
        self._paths = frozenset(path for _, path in self._table)
        # Unknown paths share one label: a scanner must not blow up the metric's cardinality.
        self._requests = {
            path: Metrics.key("requests_total", path=path) for path in (*self._paths, "other")
        }

    def __call__(self, request: Request) -> Response:
        path = request.path if request.path in self._paths else "other"
        self._metrics.add(self._requests[path])
        handler = self._table.get((request.method, request.path))
        if handler is None:
            if path != "other":
                return Response(405, b"method not allowed\n")
            return Response(404, b"not found\n")
        response = handler(request)
        if response.status >= 400:
            self._metrics.inc("responses_refused_total", path=path, status=str(response.status))
        return response

    def pixel(self, request: Request) -> Response:
        # A pixel always gets its GIF, whatever happened to the event.
        ctx = context_for(self._settings, request)
        tally = Tally()
        self._service.collect_pixel(request.query, ctx, tally)
        headers = [NO_STORE]
        if tally.identified:  # no cookie for a browser that has not consented to one
            headers.append(visitor_cookie(self._settings, ctx.visitor_id))
        return Response(200, PIXEL_GIF, "image/gif", headers)

    def healthz(self, request: Request) -> Response:
        return Response(200, b"ok\n")

    def readyz(self, request: Request) -> Response:
        if self._sink.healthy:
            return Response(200, b"ready\n")
        reason = "kafka delivery failing" if self._sink.accepting else "spool full"
        return Response(503, orjson.dumps({"ready": False, "reason": reason}), "application/json")

    def metrics(self, request: Request) -> Response:
        return Response(200, self._metrics.render(), "text/plain; version=0.0.4")
