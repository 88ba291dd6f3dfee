"""`POST /collect` (JSON or sendBeacon's text/plain), and the browser's opt-out/opt-in.

One event or an array; each item is validated on its own, so one bad item is dead-lettered
and the others accepted. The answer says which items were refused and why.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from collector.bodies import BodyError, as_batch, count_items, decode_body, item_too_large
from collector.edge import (
    context_for,
    cookie,
    cors_headers,
    json_error,
    json_response,
    preflight,
    visitor_cookie,
)
from collector.http import Request, Response
from collector.privacy import hash_email, redact_json
from collector.service import (
    CollectorService,
    Context,
    Tally,
    describe,
    event_time,
    now_ms,
)
from collector.sinks.base import EventSink
from schemas.collect import CollectEvent
from trackpipe.settings import Settings


class CollectRoutes:
    def __init__(self, settings: Settings, service: CollectorService, sink: EventSink) -> None:
        self._settings = settings
        self._service = service
        self._sink = sink

    def table(self) -> dict[tuple[str, str], Any]:
        return {
            ("POST", "/collect"): self.collect,
            ("OPTIONS", "/collect"): self.preflight,
            ("GET", "/optout"): self.opt_out,
            ("POST", "/optout"): self.opt_out,
            ("OPTIONS", "/optout"): self.preflight,
            ("GET", "/optin"): self.opt_in,
            ("POST", "/optin"): self.opt_in,
            ("OPTIONS", "/optin"): self.preflight,
        }

    def preflight(self, request: Request) -> Response:
        return preflight(self._settings, request)

    def collect(self, request: Request) -> Response:
        cors = cors_headers(self._settings, request)
        if not getattr(self._sink, "accepting", True):  # the spool is full: the client retries
            return json_error(503, "unavailable", "collector overloaded, retry later", cors)
        ctx = context_for(self._settings, request)
        tally = Tally()
        if ctx.signals.opted_out:  # nothing about an opted-out browser, not even dead letters
            self._service.drop(
                "opt_out", tally, count_items(request.body, request.headers, self._settings)
            )
            return json_response(200, {"ok": True, "accepted": 0, "rejected": []}, cors)
        try:
            items = as_batch(
                decode_body(request.body, request.headers, self._settings), self._settings
            )
        except BodyError as exc:
            raw = redact_json(request.body.decode("utf-8", "replace"))
            self._service.dead_letter(exc.reason, exc.message, "collect", raw, tally)
            return json_error(exc.status, exc.reason, exc.message, cors)
        rejected = []
        for index, item in enumerate(items):
            refused = self._collect_one(item, len(request.body), ctx, tally)
            if refused is not None:
                rejected.append({"index": index, "code": refused[0], "message": refused[1]})
        headers = list(cors)
        if tally.identified:  # no cookie for a browser that has not consented to one
            headers.append(visitor_cookie(self._settings, ctx.visitor_id))
        payload = {"ok": not rejected, "accepted": tally.accepted, "rejected": rejected}
        return json_response(200, payload, headers)

    def _collect_one(
        self, item: Any, body_size: int, ctx: Context, tally: Tally
    ) -> tuple[str, str] | None:
        received_ms = now_ms()
        if item_too_large(item, body_size, self._settings):
            message = f"event over {self._settings.max_event_bytes} bytes"
            return self._refuse("too_large", message, item, tally)
        try:
            event = CollectEvent.model_validate(item)
        except ValidationError as exc:
            return self._refuse("invalid", describe(exc), item, tally)
        granted = event.consent
        self._service.accept(
            collect_fields(event, ctx, received_ms), ctx, granted, tally, received_ms
        )
        return None

    def _refuse(self, reason: str, message: str, item: Any, tally: Tally) -> tuple[str, str]:
        raw = redact_json(orjson.dumps(item).decode())
        self._service.dead_letter(reason, message, "collect", raw, tally)
        return reason, message

    def opt_out(self, request: Request) -> Response:
        # The opt-out cookie outlives the visitor cookie it replaces: that one is expired now.
        s = self._settings
        headers = [
            *cors_headers(s, request),
            cookie(s, s.optout_cookie_name, "1", 5 * s.cookie_max_age_s),
            cookie(s, s.cookie_name, "", 0),
        ]
        return json_response(200, {"opted_out": True}, headers)

    def opt_in(self, request: Request) -> Response:
        s = self._settings
        headers = [*cors_headers(s, request), cookie(s, s.optout_cookie_name, "", 0)]
        return json_response(200, {"opted_out": False}, headers)


def collect_fields(e: CollectEvent, ctx: Context, received_ms: int) -> dict[str, Any]:
    if e.device_id:
        device_id, kind = e.device_id, "app"
    else:  # the tracker's first-party id survives third-party cookie blocking
        device_id, kind = (e.visitor_id or ctx.visitor_id), "cookie"
    return {
        "event_type": e.type,
        "site_id": e.site,
        "device_id": device_id,
        "device_kind": kind,
        "user_id": e.user_id,
        "email_hash": hash_email(e.email),
        "advertising_id": e.advertising_id,
        "ts_ms": event_time(e.ts, e.sent_at, received_ms),
        "url": e.url,
        "referrer": e.referrer,
        "page_title": e.title,
        "category": e.category,
        "product_id": e.product_id,
        "revenue": e.revenue,
        "currency": e.currency,
        "campaign": e.campaign,
        "locale": e.locale,
        "timezone": e.timezone,
        "message_id": e.message_id,
        "props": e.props,
        "source": "collect",
    }
