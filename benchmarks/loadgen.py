"""A small asyncio HTTP/1.1 load generator: closed-loop throughput and fixed-rate latency.

The fallback when wrk is missing, and the fixed-rate latency probe (Debian's wrk has no
constant-rate mode). Latency is measured from when a request was due, not from when it
was sent, so a stalled server is not hidden by the client waiting for it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def request_bytes(host: str, port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200")


async def _closed_loop(host: str, port: int, req: bytes, until: float, result: Result) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < until:
            ok = await _exchange(reader, writer, req)
            result.requests += 1
            result.errors += not ok
    finally:
        writer.close()


async def _fixed_rate(
    host: str, port: int, req: bytes, start: float, interval: float, count: int, result: Result
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in range(count):
            due = start + i * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            ok = await _exchange(reader, writer, req)
            result.latencies.append(time.monotonic() - due)
            result.requests += 1
            result.errors += not ok
    finally:
        writer.close()


def throughput(host: str, port: int, req: bytes, connections: int, seconds: float) -> Result:
    result = Result()

    async def main() -> None:
        started = time.monotonic()
        until = started + seconds
        await asyncio.gather(
            *(_closed_loop(host, port, req, until, result) for _ in range(connections))
        )
        result.seconds = time.monotonic() - started

    asyncio.run(main())
    return result


def latency(
    host: str, port: int, req: bytes, rate: float, seconds: float, connections: int = 16
) -> Result:
    """`rate` requests/s spread over `connections`, each on its own fixed schedule."""
    result = Result()
    per_connection = int(rate * seconds / connections)
    interval = connections / rate

    async def main() -> None:
        start = time.monotonic() + 0.2
        await asyncio.gather(
            *(
                _fixed_rate(
                    host,
                    port,
                    req,
                    start + i * interval / connections,
                    interval,
                    per_connection,
                    result,
                )
                for i in range(connections)
            )
        )
        result.seconds = time.monotonic() - start

    asyncio.run(main())
    return result
