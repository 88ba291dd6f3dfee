"""Build requests and read what the memory sink received."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from collector.http import HttpProtocol, LoopWrites, Request, Response, Writes
from collector.routes import Routes
from collector.sinks.memory import MemorySink
from schemas.events import Event

RAW, DEAD, BOTS = "trackpipe.events.raw", "trackpipe.events.dead", "trackpipe.events.bots"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0 Safari/537.36"
)


def post(
    routes: Routes,
    path: str,
    body: Any,
    headers: dict[str, str] | None = None,
    ip: str = "198.51.100.23",
) -> Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    all_headers = {"user-agent": CHROME, "content-type": "application/json", **(headers or {})}
    return routes(Request("POST", path, "", all_headers, raw, ip))


def get(
    routes: Routes, path: str, query: str = "", headers: dict[str, str] | None = None
) -> Response:
    all_headers = {"user-agent": CHROME, **(headers or {})}
    return routes(Request("GET", path, query, all_headers, b"", "198.51.100.23"))


def events(sink: MemorySink, topic: str = RAW) -> list[dict[str, Any]]:
    """Records as produced; `props` travels as a JSON string (schemas.events), read back here.

    Every event record must be exactly what `Event(...).model_dump()` gives (the collector
    builds it without validating a second time): same fields, order, types and values."""
    records = [orjson.loads(v) for _, v in sink.records[topic]]
    for record in records:
        if topic != DEAD and "reason" not in record:
            assert orjson.dumps(Event.model_validate(record).model_dump()) == orjson.dumps(record)
            assert list(record) == list(Event.model_fields)
        if isinstance(record.get("props"), str):
            record["props"] = orjson.loads(record["props"])
    return records


def header(response: Response, name: str) -> list[str]:
    return [v for k, v in response.headers if k.lower() == name.lower()]


def as_served(make: Callable[[Writes], HttpProtocol]) -> Callable[[], HttpProtocol]:
    """A protocol factory whose protocols share one LoopWrites on the serving loop, as
    `collector.server.serve` sets them up."""
    shared: list[Writes] = []

    def protocol() -> HttpProtocol:  # called on the server's loop
        if not shared:
            shared.append(LoopWrites(asyncio.get_running_loop()))
        return make(shared[0])

    return protocol


@contextmanager
def serving(protocol: Callable[[], HttpProtocol]) -> Iterator[int]:
    """The collector's HTTP protocol on a real loopback socket, its loop on a thread: the port."""
    loop = asyncio.new_event_loop()
    srv = loop.run_until_complete(loop.create_server(protocol, "127.0.0.1", 0))
    port = srv.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        srv.close()
        loop.run_until_complete(srv.wait_closed())
        loop.close()
