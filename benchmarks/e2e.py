"""End-to-end latency: a beacon's arrival at the collector → its row queryable in ClickHouse.

Usage: python benchmarks/e2e.py [--rate 500] [--seconds 20] [--max]
Needs `make services`. Starts a collector and a worker on real Kafka and ClickHouse, sends pixels
at a steady rate (each with a unique URL), polls ClickHouse every 50 ms for the rows that became
visible, and prints p50/p99/max of (seen − sent). With --max it also raises the rate step by step
to find the highest rate this machine sustains (every beacon delivered, p99 ≤ 2 s).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.warehouse import connect
from trackpipe.processes import Pipeline, isolated_overrides


async def send_steady(
    port: int,
    run: str,
    rate: int,
    seconds: float,
    sent: dict[int, float],
    visitor: Callable[[int], str] | None = None,
) -> None:
    """Open-loop load: beacon i leaves at start + i/rate, whatever the answers' latency.

    Beacon i carries the visitor cookie `visitor(i)` when given; without one, every beacon
    is a new visitor's (the collector gives it a new cookie).
    """
    connections = 8
    queues: list[asyncio.Queue[int | None]] = [asyncio.Queue() for _ in range(connections)]

    async def connection(q: asyncio.Queue[int | None]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (i := await q.get()) is not None:
            sent[i] = time.time()
            cookie = f"Cookie: tp_vid={visitor(i)}\r\n" if visitor else ""
            target = f"/i?s=bench&e=page_view&u=/{run}/{i}"
            writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n{cookie}\r\n".encode())
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(43)
        writer.close()

    tasks = [asyncio.create_task(connection(q)) for q in queues]
    start = time.monotonic()
    total = int(rate * seconds)
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        queues[i % connections].put_nowait(i)
    for q in queues:
        q.put_nowait(None)
    await asyncio.gather(*tasks)


def watch(
    url: str, run: str, sent: dict[int, float], expected: int, timeout_s: float
) -> dict[int, float]:
    seen: dict[int, float] = {}
    prefix = f"/{run}/"
    with connect(url) as wh:
        deadline = time.monotonic() + timeout_s
        while len(seen) < expected and time.monotonic() < deadline:
            rows = wh.query(
                f"SELECT url FROM {wh.database}.events WHERE site_id = 'bench' "
                "AND startsWith(url, %(prefix)s)",
                {"prefix": prefix},
            )
            now = time.time()
            for (u,) in rows:
                seen.setdefault(int(u[len(prefix) :]), now)
            time.sleep(0.05)
    return seen


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def measure(pipeline: Pipeline, url: str, rate: int, seconds: float) -> tuple[int, list[float]]:
    import threading

    run = uuid.uuid4().hex[:8]
    sent: dict[int, float] = {}
    expected = int(rate * seconds)
    result: dict[int, float] = {}
    watcher = threading.Thread(
        target=lambda: result.update(watch(url, run, sent, expected, seconds + 30))
    )
    watcher.start()
    asyncio.run(send_steady(int(pipeline.overrides["collector_port"]), run, rate, seconds, sent))
    watcher.join()
    return expected, [result[i] - sent[i] for i in result if i in sent]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max", action="store_true")
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--clickhouse", default="127.0.0.1:9000")
    args = parser.parse_args()
    uid = uuid.uuid4().hex[:8]
    url = f"clickhouse://{args.clickhouse}/bench_e2e_{uid}"
    o: dict[str, object] = {
        "kafka_bootstrap": args.kafka,
        "warehouse_url": url,
        **isolated_overrides(f"e2e-{uid}"),
        "sink_batch_seconds": 0.2,
    }
    with tempfile.TemporaryDirectory() as logs, Pipeline(o, Path(logs)) as pipeline:
        rates = [args.rate] + ([args.rate * k for k in (2, 4, 8, 16, 32)] if args.max else [])
        best = 0
        for rate in rates:
            expected, latencies = measure(pipeline, url, rate, args.seconds)
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            print(
                f"rate {rate}/s for {args.seconds:.0f}s: {len(latencies)}/{expected} queryable; "
                f"latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
                f"max {max(latencies) * 1000:.0f} ms"
            )
            if len(latencies) < expected or p99 > 2.0:
                break
            best = rate
        if args.max:
            print(f"highest sustained rate with p99 ≤ 2 s: {best}/s")
    with connect(url) as wh:
        wh.execute(f"DROP DATABASE {wh.database}")


if __name__ == "__main__":
    main()
