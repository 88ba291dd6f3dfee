"""Sink throughput into the real ClickHouse server against a clickhouse-client bulk insert.

Usage: python benchmarks/warehouse.py [--rows 200000]
Needs `make services` (Kafka on 9092, ClickHouse on 9000). Prints rows/s of both and the ratio
(target: the sink reaches at least 0.5 of the bulk insert).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from kafka import KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.events import Event
from schemas.warehouse import connect
from trackpipe.kafka_admin import ensure_topics
from trackpipe.processes import (
    http_get,
    isolated_overrides,
    run_trackpipe,
    start_trackpipe,
    stop,
    wait_http,
)
from trackpipe.settings import Settings


def make_events(n: int) -> list[bytes]:
    base = 1_764_000_000_000
    return [
        orjson.dumps(
            Event(
                event_id=uuid.uuid4().hex,
                event_type=("page_view", "add_to_cart", "purchase")[i % 3],
                site_id="shop",
                device_id=f"{i % 50_000:032x}",
                device_kind="cookie",
                user_id=f"user-{i % 20_000}" if i % 4 == 0 else "",
                ts_ms=base + i * 37,
                received_ms=base + i * 37 + 120,
                url=f"https://shop.example/c/{i % 800}",
                referrer="https://www.google.com/",
                category=("shoes", "bags", "sport")[i % 3],
                revenue=19.9 if i % 3 == 2 else 0.0,
                currency="EUR",
                ip="203.0.113.0",
                user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0",
                channel="organic_search",
                device_type="desktop",
                os="Windows",
                browser="Chrome",
                consent=["analytics"],
            ).model_dump()
        )
        for i in range(n)
    ]


def bulk_reference(values: list[bytes], url: str, port: int) -> float:
    """clickhouse-client inserting the very rows the sink writes (the collector's JSON lines)."""
    client = shutil.which("clickhouse-client") or shutil.which("clickhouse")
    if client is None:
        raise SystemExit("clickhouse-client not found (apt-get install clickhouse-client)")
    with connect(url) as wh:
        db = wh.database
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
        for value in values:
            f.write(value + b"\n")
        path = f.name
    command = [client] if client.endswith("client") else [client, "client"]
    command += [
        "--port",
        str(port),
        "--input_format_skip_unknown_fields=1",
        "--query",
        f"INSERT INTO {db}.events FORMAT JSONEachRow",
    ]
    started = time.perf_counter()
    with open(path, "rb") as data:
        subprocess.run(command, stdin=data, check=True)
    elapsed = time.perf_counter() - started
    Path(path).unlink()
    return len(values) / elapsed


def sink_rate(values: list[bytes], o: dict[str, object], logs: Path) -> float:
    settings = Settings(
        _env_file=None,
        kafka_bootstrap=str(o["kafka_bootstrap"]),
        topic_raw=str(o["topic_raw"]),
        topic_dead=str(o["topic_dead"]),
        topic_suppressions=str(o["topic_suppressions"]),
    )
    ensure_topics(settings)
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks=1, linger_ms=20, batch_size=256 * 1024
    )
    for i, value in enumerate(values):
        producer.send(settings.topic_raw, key=f"{i % 50_000:032x}".encode(), value=value)
    producer.flush()
    producer.close()
    worker = start_trackpipe("worker", ["worker"], o, logs)
    stats_url = f"http://127.0.0.1:{o['worker_web_port']}/stats/"
    try:
        wait_http(worker, stats_url)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            stats = orjson.loads(http_get(stats_url)[1])
            if stats["rows_written"] >= len(values):
                elapsed = stats["last_write_at"] - stats["first_fetch_at"]
                print(f"sink: {stats['batches']} batches in {elapsed:.2f} s")
                return len(values) / elapsed
            time.sleep(0.25)
        raise SystemExit(f"sink wrote only {stats['rows_written']} rows in 600 s")
    finally:
        import signal

        stop(worker, signal.SIGINT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--clickhouse-port", type=int, default=9000)
    args = parser.parse_args()
    uid = uuid.uuid4().hex[:8]
    values = make_events(args.rows)
    base = f"clickhouse://127.0.0.1:{args.clickhouse_port}"
    sink_db, ref_db = f"{base}/bench_sink_{uid}", f"{base}/bench_ref_{uid}"
    o: dict[str, object] = {
        "kafka_bootstrap": args.kafka,
        "warehouse_url": sink_db,
        **isolated_overrides(f"bench-{uid}"),
        "sink_batch_size": 50_000,
        "sink_batch_seconds": 1.0,
        # The sink alone: the worker's other stages have benchmarks of their own.
        "identity_enabled": False,
        "signals_enabled": False,
    }
    for url in (sink_db, ref_db):
        run_trackpipe(["migrate"], o | {"warehouse_url": url})
    with tempfile.TemporaryDirectory() as logs:
        sink = sink_rate(values, o, Path(logs))
    reference = bulk_reference(values, ref_db, args.clickhouse_port)
    for url in (sink_db, ref_db):
        with connect(url) as wh:
            [(rows,)] = wh.query(f"SELECT count() FROM {wh.database}.events")
            assert rows == args.rows, f"{url}: {rows} rows"
            wh.execute(f"DROP DATABASE {wh.database}")
    print(f"rows: {args.rows}")
    print(f"clickhouse-client bulk insert (reference): {reference:,.0f} rows/s")
    print(f"trackpipe sink (Kafka → ClickHouse):       {sink:,.0f} rows/s")
    print(f"ratio: {sink / reference:.2f} (target ≥ 0.50)")


if __name__ == "__main__":
    main()
