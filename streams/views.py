"""The worker's HTTP views: sink statistics, and the authenticated erasure endpoint."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import asdict

import faust
from faust.web import Request, Response, View

from streams.sink import WarehouseSink
from trackpipe.erasure import Identifier, erase
from trackpipe.erasure_publish import publish_erasure
from trackpipe.settings import Settings


def authorized(settings: Settings, request: Request) -> bool:
    if settings.admin_api_key is None:
        return False
    expected = f"Bearer {settings.admin_api_key.get_secret_value()}".encode()
    given = request.headers.get("Authorization", "").encode()
    return hmac.compare_digest(given, expected)


def register_views(app: faust.App, sink: WarehouseSink, settings: Settings) -> None:
    @app.page("/stats/")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            return self.json(asdict(sink.stats))

    @app.page("/erase/")
    class Erase(View):
        """POST {"identifier": "email:jane@example.com"} with `Authorization: Bearer <key>`."""

        async def post(self, request: Request) -> Response:
            if not authorized(settings, request):
                return self.json({"error": "missing or wrong API key"}, status=401)
            try:
                body = await request.json()
                identifier = Identifier.parse(str(body["identifier"]))
            except (ValueError, KeyError, TypeError) as exc:
                return self.json({"error": f"bad request: {exc}"}, status=400)
            report = await sink.with_warehouse(lambda wh: erase(wh, identifier, "http"))
            keys = await asyncio.get_running_loop().run_in_executor(
                None, publish_erasure, settings, report.identifiers
            )
            sink.suppressions.add(keys)
            return self.json(
                {
                    "erasure_id": report.erasure_id,
                    "identifiers": len(report.identifiers),
                    "tables": report.tables,
                }
            )
