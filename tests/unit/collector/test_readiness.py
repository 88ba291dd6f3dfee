from __future__ import annotations

import orjson

from collector.http import Request
from collector.routes import PIXEL_GIF, Routes
from collector.sinks.memory import MemorySink


def readyz(routes: Routes) -> tuple[int, bytes]:
    response = routes(Request("GET", "/readyz", "", {}, b"", "127.0.0.1"))
    return response.status, response.body


def test_readiness_says_why_it_is_not_ready(routes: Routes, sink: MemorySink) -> None:
    assert readyz(routes)[0] == 200
    sink.is_healthy = False
    status, body = readyz(routes)
    assert (status, orjson.loads(body)["reason"]) == (503, "kafka delivery failing")
    sink.is_accepting = False
    status, body = readyz(routes)
    assert (status, orjson.loads(body)["reason"]) == (503, "spool full")
    pixel = routes(Request("GET", "/i", "s=shop", {}, b"", "127.0.0.1"))
    assert (pixel.status, pixel.body) == (200, PIXEL_GIF)  # the pixel still gets its GIF
