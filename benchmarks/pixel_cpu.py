"""CPU per pixel beacon in-process: request bytes in, response bytes out, no sockets.

The collector's HTTP protocol is fed the beacons of `benchmarks/beacons.lua` (800 pages,
8 referrers, 2,000 visitors and user ids) as wrk sends them, plus a User-Agent and, for
three in four, the visitor cookie; the records go through the delivery sink to a producer
that keeps nothing. Only Python's share is measured: no kernel, no librdkafka.

    python -m benchmarks.pixel_cpu --beacons 200000       # µs per beacon (best of --runs)
    export PYTHONHASHSEED=0
    valgrind --tool=callgrind python -m benchmarks.pixel_cpu --beacons 0 --runs 1
    valgrind --tool=callgrind python -m benchmarks.pixel_cpu --beacons 20000 --runs 1

Instructions per beacon = the difference of the two callgrind totals / 20,000: start-up
and warm-up cancel out. The machine is shared, so prefer instructions to time. A fixed hash
seed makes runs repeatable: with random seeds the figure moves by about 1,000 instructions.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from collector.http import HttpProtocol
from collector.metrics import Metrics
from collector.server import build_routes
from collector.sinks.base import FailureReport, Producer
from collector.sinks.delivery import DeliverySink
from collector.spool import Spool
from trackpipe.settings import Settings

REFERRERS = (
    "https%3A%2F%2Fwww.google.com%2F",
    "https%3A%2F%2Fwww.bing.com%2F",
    "https%3A%2F%2Fwww.facebook.com%2F",
    "https%3A%2F%2Fshop.example%2F",
    "",
    "https%3A%2F%2Fnews.example%2Farticle%3Futm_source%3Dnews%26utm_medium%3Demail",
    "https%3A%2F%2Fduckduckgo.com%2F",
    "https%3A%2F%2Fshop.example%2Fcart",
)
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
)


def beacons(count: int = 4096, seed: int = 42) -> list[bytes]:
    """Raw HTTP requests shaped like benchmarks/beacons.lua's, as wrk formats them."""
    rng = random.Random(seed)
    requests = []
    for i in range(1, count + 1):
        product = rng.randint(1, 800)
        category = f"c{product % 16}"
        path = (
            f"/i?s=shop&e=page_view&u=https%3A%2F%2Fshop.example%2F{category}%2Fp%2F{product}"
            f"&r={rng.choice(REFERRERS)}&cat={category}&pid=sku-{product}"
            f"&uid=user-{rng.randint(1, 2000)}&ts={1763900000000 + i}"
        )
        headers = f"Host: 127.0.0.1:8080\r\nUser-Agent: {rng.choice(USER_AGENTS)}\r\n"
        if rng.random() < 0.75:
            headers += f"Cookie: tp_vid={rng.randint(1, 2000):032x}\r\n"
        requests.append(f"GET {path} HTTP/1.1\r\n{headers}\r\n".encode())
    return requests


class NullProducer(Producer):
    """Takes every record and settles it at once: librdkafka's share is not measured."""

    name = "null"

    def __init__(self) -> None:
        self.produced = 0

    def produce(self, topic: str, key: bytes, value: bytes, on_failure: FailureReport) -> None:
        self.produced += 1

    @property
    def pending(self) -> int:
        return 0

    def flush(self, timeout: float) -> None:
        pass

    def close(self, timeout: float) -> None:
        pass


class Transport:
    """What the protocol writes to, counting the answers' bytes."""

    def __init__(self) -> None:
        self.written = 0

    def get_extra_info(self, name: str) -> tuple[str, int]:
        return ("198.51.100.23", 40000)

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        raise AssertionError("a keep-alive beacon closed its connection")


def protocol(spool_dir: Path) -> tuple[HttpProtocol, Transport, NullProducer, DeliverySink]:
    settings = Settings(_env_file=None)
    metrics = Metrics()
    producer = NullProducer()
    sink = DeliverySink(producer, Spool(spool_dir, 1 << 20), metrics)
    routes = build_routes(settings, sink, metrics)
    proto = HttpProtocol(routes, settings.max_body_bytes, settings.max_url_bytes, metrics)
    transport = Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport, producer, sink


def run(proto: HttpProtocol, requests: list[bytes], count: int) -> float:
    """CPU seconds to feed `count` beacons in turn on one keep-alive connection (thread time:
    waiting for a core shared with other work does not count)."""
    feed = proto.data_received
    todo = (requests * (count // len(requests) + 1))[:count]
    start = time.thread_time()
    for data in todo:
        feed(data)
    return time.thread_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beacons", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    requests = beacons()
    with tempfile.TemporaryDirectory() as spool_dir:
        proto, transport, producer, sink = protocol(Path(spool_dir))
        warm = 2 * len(requests)
        run(proto, requests, warm)  # warm the caches, as a running collector's
        best = min(run(proto, requests, args.beacons) for _ in range(args.runs))
        sink.close(timeout=1)
    fed = warm + args.beacons * args.runs
    # Every beacon must have been answered and produced, or the figure means nothing.
    print(f"{transport.written / fed:.1f} answer bytes, {producer.produced / fed} records each")
    if args.beacons:
        print(f"{best / args.beacons * 1e6:.2f} µs per beacon (best of {args.runs})")


if __name__ == "__main__":
    main()
