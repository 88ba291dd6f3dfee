"""Serves the first-party JavaScript tracker (`/t.js`, source in collector/static/t.js)."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from collector.http import Request, Response

_SOURCE = Path(__file__).with_name("static") / "t.js"


@cache
def tracker_source() -> tuple[bytes, str]:
    body = _SOURCE.read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


class TrackerRoutes:
    def table(self) -> dict[tuple[str, str], Any]:
        return {("GET", "/t.js"): self.script}

    def script(self, request: Request) -> Response:
        body, etag = tracker_source()
        # An hour of caching: a new tracker reaches every page within the hour.
        headers = [("Cache-Control", "public, max-age=3600"), ("ETag", etag)]
        if request.headers.get("if-none-match") == etag:
            return Response(304, b"", "application/javascript; charset=utf-8", headers)
        return Response(200, body, "application/javascript; charset=utf-8", headers)
