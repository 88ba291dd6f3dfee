"""Read API latency: profile lookups over HTTP at a fixed rate, one million profiles stored.

Usage: python benchmarks/read_api.py [--profiles 1000000] [--rate 1000] [--seconds 20]
Needs `make services`. Writes the profiles into the signals table's changelog topic (what the
stage itself would have written, one record per person), starts a real worker, which recovers
its table from that changelog, then sends `GET /signals/profiles/<id>/` for random persons at a
steady rate (open loop: request i leaves at start + i/rate, whatever the answers' latency, so
queueing counts) and prints p50/p99/max from the scheduled send to the whole answer read.
Target (DEVELOPERS.md): p99 ≤ 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from aiokafka import AIOKafkaProducer
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from streams.profiles import DAY_MS, SignalsConfig, apply_events, new_profile
from trackpipe.processes import free_port, http_get, run_trackpipe, start_trackpipe, stop

KEY = "bench-key"
CATEGORIES = ["shoes", "hats", "bags", "coats", "books", "games", "garden", "tools", "toys"]


def templates(n: int, rng: random.Random) -> list[bytes]:
    """Realistic profiles (a few to a few dozen events each) with a placeholder person id."""
    out = []
    now = int(time.time() * 1000)
    for t in range(n):
        p = new_profile("@PID@")
        events = [
            {
                "event_id": f"@PID@-{i}",
                "event_type": rng.choice(["page_view"] * 6 + ["add_to_cart", "email_open"]),
                "ts_ms": now - rng.randrange(30 * DAY_MS),
                "device_id": f"@PID@-c{i % 3}",
                "category": rng.choice(CATEGORIES),
                "channel": rng.choice(["email", "organic_search", "direct", "social"]),
                "device_type": rng.choice(["mobile", "desktop"]),
                "consent": ["marketing"],
            }
            for i in range(rng.randrange(3, 40))
        ]
        if t % 3 == 0:
            events.append({"event_id": "@PID@-p", "event_type": "purchase", "ts_ms": now,
                           "revenue": 42.0, "email_hash": "@PID@-h"})  # fmt: skip
        apply_events(p, events, SignalsConfig())
        out.append(orjson.dumps(p))
    return out


async def fill(bootstrap: str, topic: str, count: int, partitions: int) -> list[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics(
        [NewTopic(topic, partitions, 1, topic_configs={"cleanup.policy": "compact"})]
    )
    admin.close()
    rng = random.Random(7)
    shapes = templates(500, rng)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, max_batch_size=1 << 20)
    await producer.start()
    ids = []
    try:
        pending = []
        for i in range(count):
            pid = uuid.UUID(int=rng.getrandbits(128)).hex
            ids.append(pid)
            value = shapes[i % len(shapes)].replace(b"@PID@", pid.encode())
            pending.append(await producer.send(topic, key=pid.encode(), value=value))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return ids


async def lookups(
    port: int, ids: list[str], rate: int, seconds: float
) -> tuple[list[float], Counter[bytes]]:
    connections = 16
    queues: list[asyncio.Queue[tuple[str, float] | None]] = [
        asyncio.Queue() for _ in range(connections)
    ]
    latencies: list[float] = []
    statuses: Counter[bytes] = Counter()

    async def connection(q: asyncio.Queue[tuple[str, float] | None]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (item := await q.get()) is not None:
            pid, scheduled = item
            writer.write(
                f"GET /signals/profiles/{pid}/ HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {KEY}\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - scheduled)
            statuses[head.split(b" ", 2)[1]] += 1
        writer.close()

    tasks = [asyncio.create_task(connection(q)) for q in queues]
    rng = random.Random(11)
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queues[i % connections].put_nowait((rng.choice(ids), scheduled))
    for q in queues:
        q.put_nowait(None)
    await asyncio.gather(*tasks)
    return latencies, statuses


def wait_recovered(port: int, worker, timeout_s: float = 1800) -> float:
    """Until the worker says its tables are recovered from the changelog."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if not worker.alive():
            raise SystemExit(f"worker died:\n{worker.tail()}")
        try:
            status, body = http_get(f"http://127.0.0.1:{port}/signals/stats/")
        except OSError:  # not listening yet
            status, body = 0, b""
        if status == 200 and orjson.loads(body)["recovered"]:
            return time.monotonic() - start
        time.sleep(1)
    raise SystemExit(f"table not recovered after {timeout_s}s:\n{worker.tail()}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--clickhouse", default="127.0.0.1:9000")
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    partitions = 4
    port = free_port()
    o = {
        "kafka_bootstrap": args.kafka,
        "warehouse_url": f"clickhouse://{args.clickhouse}/bench_read_{run}",
        "topic_raw": f"bench-raw-{run}",
        "topic_dead": f"bench-dead-{run}",
        "topic_suppressions": f"bench-suppressions-{run}",
        "topic_attributed": f"bench-attributed-{run}",
        "topic_signals": f"bench-signals-{run}",
        "topic_partitions": partitions,
        "app_id": f"bench-read-{run}",
        "worker_web_port": port,
        "worker_data_dir": Path(tempfile.mkdtemp()) / "worker",
        "read_api_keys": KEY,
        "log_level": "warning",
    }
    changelog = f"{o['app_id']}-signals-profiles-changelog"
    t0 = time.monotonic()
    ids = asyncio.run(fill(args.kafka, changelog, args.profiles, partitions))
    print(f"wrote {len(ids):,} profiles to {changelog} in {time.monotonic() - t0:.1f}s")
    # The client's own full GC collections would traverse `ids` (1M strings: 25-40 ms here)
    # and delay its reads, counted as the server's latency: freeze what is there now.
    gc.collect()
    gc.freeze()
    run_trackpipe(["migrate"], o)
    worker = start_trackpipe("worker", ["worker"], o, Path(tempfile.mkdtemp()))
    try:
        recovered = wait_recovered(port, worker)
        print(
            f"worker recovered its table in {recovered:.1f}s; RSS {rss_mb(worker.popen.pid):.0f} MB"
        )
        asyncio.run(lookups(port, ids, min(args.rate, 200), 2))  # warm-up, not counted
        latencies, statuses = asyncio.run(lookups(port, ids, args.rate, args.seconds))
    finally:
        stop(worker, signal.SIGINT)
        admin = KafkaAdminClient(bootstrap_servers=args.kafka)
        admin.delete_topics([changelog])
        admin.close()
    ms = sorted(x * 1000 for x in latencies)
    p50 = statistics.median(ms)
    p99 = ms[int(len(ms) * 0.99) - 1]
    print(
        f"profiles stored: {len(ids):,}; lookups: {len(ms):,} at {args.rate}/s for "
        f"{args.seconds:.0f}s over 16 connections; "
        f"statuses: {dict((k.decode(), v) for k, v in statuses.items())}"
    )
    print(f"latency ms: p50 {p50:.2f}  p99 {p99:.2f}  max {ms[-1]:.2f}  (target p99 ≤ 10)")


if __name__ == "__main__":
    main()
