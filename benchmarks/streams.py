"""Identity + sessions throughput per worker on real Kafka, against the raw consume rate.

    python benchmarks/streams.py [--persons 15000]        # throughput (Kafka + ClickHouse)
    python benchmarks/streams.py --memory 1000000         # peak RSS for 1M identifiers:
                                                          # the engine, then a real worker
    python benchmarks/streams.py --engine                 # the engine alone, no I/O

Throughput: N generated events are pre-loaded into a fresh 4-partition topic. The stage runs
alone (`BENCH_SIGNALS=1` also publishes the attributed events the signals stage reads). The
reference is a plain aiokafka consumer reading them all in batches with `orjson.loads` (no
work). Then one worker process running only the identity + sessions stage (batcher +
stitching loop, ClickHouse rows included) consumes the same topic; its rate is N over the
time from its first applied event to the flush that covers the last one. The ratio is
printed, and no timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas.migrate import migrate  # noqa: E402
from schemas.warehouse import connect  # noqa: E402
from streams.stitching import ensure_stage_topics  # noqa: E402
from trackpipe.identity_traffic import generate  # noqa: E402
from trackpipe.kafka_admin import ensure_topics  # noqa: E402
from trackpipe.processes import Proc, env_for, free_port, http_get, stop  # noqa: E402
from trackpipe.settings import Settings  # noqa: E402


async def preload(settings: Settings, events: list[dict]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20,
        max_batch_size=512 * 1024,
    )  # fmt: skip
    await producer.start()
    try:
        for i in range(0, len(events), 5000):
            futures = [
                await producer.send(
                    settings.topic_raw, orjson.dumps(e), key=e["device_id"].encode()
                )
                for e in events[i : i + 5000]
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_consume_rate(settings: Settings, expected: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        settings.topic_raw, bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"raw-reference-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest",
        enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024,
    )  # fmt: skip
    await consumer.start()
    try:
        seen, started = 0, None
        while seen < expected:
            polled = await consumer.getmany(timeout_ms=500, max_records=20_000)
            if started is None and polled:
                started = time.perf_counter()
            for messages in polled.values():
                for m in messages:
                    orjson.loads(m.value)
                seen += sum(len(m) for m in polled.values())
        return expected / (time.perf_counter() - (started or 0))
    finally:
        await consumer.stop()


def stage_rate(overrides: dict, expected: int, logs: Path) -> tuple[float, dict]:
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / "stage.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [sys.executable, __file__, "--stage-worker"],
            env=env_for(overrides | {"worker_web_port": port}),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    proc = Proc("stage", popen, log_path)
    first = None
    try:
        while True:
            if not proc.alive():
                raise RuntimeError(f"stage worker died:\n{proc.tail()}")
            try:
                status, body = http_get(f"http://127.0.0.1:{port}/identity/", timeout=1.0)
            except OSError:
                status = 0
            if status == 200:
                stats = orjson.loads(body)
                counters = stats["counters"] or {}
                if first is None and counters.get("events", 0) > 0:
                    first = time.perf_counter()
                flushed = stats["flushed"].get("events", 0) + stats["flushed"].get("late", 0)
                if flushed >= expected and first is not None:
                    rate = expected / (time.perf_counter() - first)
                    peak = {"cpu_s": cpu_seconds(popen.pid), "peak_kb": peak_kb(popen.pid)}
                    return rate, stats | peak
            time.sleep(0.05)
    finally:
        stop(proc, signal.SIGINT)


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used (Linux): less moved by other load than a rate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_kb(pid: int) -> int:
    """The process's peak resident set (VmHWM, Linux), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run_stage_worker() -> None:
    """Only the identity + sessions stage: the sink would compete for the same CPU."""
    import faust

    from streams.app import create_app
    from streams.heap import freeze_heap_after_recovery
    from streams.stitching import Stitching

    settings = Settings()
    app = create_app(settings)
    freeze_heap_after_recovery(app)  # as streams/worker.py does
    stitching = Stitching(app, settings)
    stitching.register()
    level = os.environ.get("BENCH_LOG_LEVEL", "warning")
    faust.Worker(app, loglevel=level, quiet=True).execute_from_commandline()


def stage_setup() -> tuple[Settings, dict, Path]:
    """Fresh topics and database for one benchmark run."""
    uid = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    overrides = {
        "topic_raw": f"bench-raw-{uid}",
        "topic_dead": f"bench-dead-{uid}",
        "app_id": f"bench-streams-{uid}",
        "warehouse_url": f"clickhouse://127.0.0.1:9000/bench_{uid}",
        "worker_data_dir": tmp / "worker",
        "kafka_session_timeout_s": 10,
        "identity_flush_seconds": float(os.environ.get("BENCH_FLUSH_SECONDS", "1.0")),
        "signals_enabled": os.environ.get("BENCH_SIGNALS", "0") == "1",
    }
    settings = Settings(_env_file=None, **overrides)  # type: ignore[arg-type]
    with connect(settings.warehouse_url) as wh:
        migrate(wh)
    ensure_topics(settings)
    ensure_stage_topics(settings)
    return settings, overrides, tmp


def drop_database(settings: Settings) -> None:
    with connect(settings.warehouse_url) as wh:
        wh.execute(f"DROP DATABASE IF EXISTS {wh.database}")


def throughput(persons: int) -> None:
    events = generate(persons, seed=42)
    settings, overrides, tmp = stage_setup()
    try:
        t0 = time.perf_counter()
        asyncio.run(preload(settings, events))
        print(f"pre-loaded {len(events):,} events in {time.perf_counter() - t0:.1f}s")
        raw = asyncio.run(raw_consume_rate(settings, len(events)))
        rate, stats = stage_rate(overrides, len(events), tmp / "logs")
        print(f"raw consume + orjson.loads (aiokafka getmany): {raw:,.0f} events/s")
        print(f"identity + sessions, one worker:               {rate:,.0f} events/s")
        print(f"ratio stage / raw consume:                     {rate / raw:.3f}")
        verdict = "met" if rate >= 25_000 else "NOT met"
        print(f"target 25,000 events/s per worker:             {verdict}")
        print(f"stage counters: {stats['flushed']}")
        print(f"stage seconds by part: {stats['seconds']}, {stats['flushes']} flushes")
        cpu = stats["cpu_s"]
        print(f"worker CPU, start-up included: {cpu:.1f} s, {cpu / len(events) * 1e6:.0f} µs/event")
        print(f"worker peak RSS: {stats['peak_kb'] / 1024:,.0f} MB")
    finally:
        drop_database(settings)


def memory_events(identifiers: int) -> list[dict]:
    """Each person has four identifiers (cookie, app device, user id, hashed e-mail) and logs
    in on both devices; persons start 10 s apart, so sessions keep closing behind them."""
    events, t = [], 1_764_000_000_000
    for p in range(identifiers // 4):
        t += 10_000
        for device, kind, email in ((f"c{p}", "cookie", f"{p:064x}"), (f"a{p}", "app", "")):
            events.append(
                {
                    "event_id": f"e{len(events)}",
                    "ts_ms": t,
                    "device_id": device,
                    "device_kind": kind,
                    "user_id": f"user-{p}",
                    "email_hash": email,
                    "event_type": "login",
                    "url": "https://shop.example/login",
                    "channel": "direct",
                    "device_type": "mobile",
                }
            )
    return events


def memory(identifiers: int) -> None:
    """Peak RSS holding `identifiers` ids: the engine alone in this process, then a real
    stage worker (Kafka + ClickHouse) that applied the same events."""
    from streams.batcher import compact
    from streams.engine import Engine

    events = memory_events(identifiers)
    rows = [compact(i, orjson.dumps(e)) for i, e in enumerate(events)]
    engine = Engine(1, 30 * 60_000, 10 * 60_000)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    for i in range(0, len(rows), 500):
        engine.apply(0, rows[i : i + 500])
        engine.flush(i + 500)
    del rows
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    open_sessions = sum(len(v) for v in engine.people.open.values())
    print(f"{len(engine.graph.owner):,} identifiers, {len(engine.graph.persons):,} persons, "
          f"{open_sessions:,} open person sessions, {len(events):,} events "
          f"in {time.perf_counter() - started:.0f}s")  # fmt: skip
    print(f"engine alone: peak RSS {peak / 1024:,.0f} MB, of which {base / 1024:,.0f} MB before "
          f"the engine (interpreter, imports and the input events)")  # fmt: skip
    del engine
    settings, overrides, tmp = stage_setup()
    try:
        asyncio.run(preload(settings, events))
        _, stats = stage_rate(overrides, len(events), tmp / "logs")
        print(f"stage worker (faust, Kafka clients, engine), after applying and flushing "
              f"them all: peak RSS {stats['peak_kb'] / 1024:,.0f} MB")  # fmt: skip
    finally:
        drop_database(settings)


def engine_only(persons: int) -> None:
    """The engine alone, in this process: no Kafka, no ClickHouse, no state table."""
    from streams.batcher import compact
    from streams.engine import Engine

    rows = [compact(i, orjson.dumps(e)) for i, e in enumerate(generate(persons, seed=42))]
    # A worker holds one batch of input at a time and freezes its long-lived objects once
    # its tables are recovered (streams/heap.py); here the whole input is held, and without
    # freezing it every full collection would walk it: half of the time measured was that.
    gc.collect()
    gc.freeze()
    engine = Engine(1, 30 * 60_000, 10 * 60_000)
    started = time.perf_counter()
    for n, i in enumerate(range(0, len(rows), 500)):
        engine.apply(0, rows[i : i + 500])
        if n % 10 == 0:  # about what a 1 s flush covers at the stage's rate
            engine.flush(i)
    rate = len(rows) / (time.perf_counter() - started)
    print(f"engine alone (apply + flush, {len(rows):,} events): {rate:,.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=15_000)
    parser.add_argument("--memory", type=int, metavar="IDENTIFIERS")
    parser.add_argument("--engine", action="store_true", help="the engine alone, in-process")
    parser.add_argument("--stage-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage_worker:
        sys.argv = [sys.argv[0], "worker"]
        run_stage_worker()
    elif args.engine:
        engine_only(args.persons)
    elif args.memory:
        memory(args.memory)
    else:
        throughput(args.persons)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
