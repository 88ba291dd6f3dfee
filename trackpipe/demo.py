"""`make demo`: the whole pipeline on embedded defaults, then what it computed.

Embedded broker (Tansu) + embedded warehouse (chdb) + the real collector and worker
processes, fed by the built-in traffic generator. No Docker, no root, no JVM.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import orjson

from schemas.warehouse import Warehouse
from trackpipe.embedded import start_tansu
from trackpipe.kafka_admin import read_all
from trackpipe.processes import Pipeline, free_port, http_get, stop
from trackpipe.traffic import generate, send_beacons


def demo_overrides(workdir: Path, kafka_port: int) -> dict[str, object]:
    return {
        "kafka_bootstrap": f"127.0.0.1:{kafka_port}",
        "kafka_idempotence": False,  # the embedded broker has no idempotent producers
        "kafka_session_timeout_s": 6,  # a group join there takes half the session timeout
        "warehouse_url": f"chdb://{(workdir / 'warehouse').resolve()}",
        "collector_port": free_port(),
        "worker_web_port": free_port(),
        "worker_data_dir": (workdir / "worker").resolve(),
        "collector_spool_dir": (workdir / "spool").resolve(),
        "sink_batch_seconds": 0.3,
        "app_id": "trackpipe-demo",
    }


def metric_total(metrics: bytes, name: str) -> int:
    total = 0
    for line in metrics.decode().splitlines():
        if line.startswith(f"trackpipe_{name}"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def run_demo(persons: int = 300, workdir: str = ".demo", seed: int = 7) -> int:
    work = Path(workdir)
    shutil.rmtree(work, ignore_errors=True)
    logs = work / "logs"
    print("▶ starting the embedded broker (Tansu)")
    kafka_port = free_port()
    broker = start_tansu(kafka_port, logs)
    o = demo_overrides(work, kafka_port)
    pipeline = Pipeline(o, logs)
    try:
        print("▶ creating the warehouse schema (chdb), starting the collector and a worker")
        pipeline.start()
        beacons = list(generate(persons, seed=seed, malformed_every=97))
        print(f"▶ sending {len(beacons)} beacons from {persons} people")
        started = time.monotonic()
        gifs = send_beacons("127.0.0.1", int(o["collector_port"]), beacons)  # type: ignore[arg-type]
        print(f"  {gifs} pixels answered in {time.monotonic() - started:.1f}s")
        metrics = http_get(f"{pipeline.collector_url}/metrics")[1]
        accepted = metric_total(metrics, "events_accepted_total")
        dead = metric_total(metrics, "dead_letters_total")
        print(f"  collector: {accepted} accepted, {dead} dead-lettered")
        written = pipeline.wait_rows_written(accepted)
        print(f"  worker: {written} rows written to the warehouse")
        letters = read_all(str(o["kafka_bootstrap"]), "trackpipe.events.dead", idle_s=1.0)
    finally:
        pipeline.stop()  # the worker must let go of the chdb directory before we read it
        stop(broker)
    _report(o, written, accepted, letters)
    return 0 if written == accepted and gifs == len(beacons) else 1


def _dashboards(wh: Warehouse) -> None:
    db = wh.database
    [(days, persons, devices)] = wh.query(
        f"SELECT uniqExact(day), uniqMerge(persons), uniqMerge(devices) FROM {db}.daily_activity"
    )
    print(f"\n== dashboards: {persons} persons and {devices} devices active over {days} days")
    print(
        "  channel mix: "
        + ", ".join(
            f"{channel or '(none)'} {events}"
            for channel, events in wh.query(
                f"SELECT channel, countMerge(events) AS n FROM {db}.channel_mix_daily "
                f"GROUP BY channel ORDER BY n DESC"
            )
        )
    )
    steps = wh.query(
        f"SELECT sumIf(devices, level >= 1), sumIf(devices, level >= 2), "
        f"sumIf(devices, level >= 3) FROM {db}.funnel_daily"
    )[0]
    print("  funnel (device-days): " + " → ".join(str(n) for n in steps))


def _report(
    o: dict[str, object], written: int, accepted: int, letters: list[tuple[bytes | None, bytes]]
) -> None:
    from schemas.warehouse import connect

    reasons = Counter(orjson.loads(v)["reason"] for _, v in letters)
    print(f"\n== dead letters on trackpipe.events.dead: {len(letters)} {dict(reasons)}")
    with connect(str(o["warehouse_url"])) as wh:
        db = wh.database
        print("\n== rows per table")
        for (table,) in wh.query(
            "SELECT name FROM system.tables WHERE database = %(db)s ORDER BY name", {"db": db}
        ):
            print(f"  {table:<20} {wh.query(f'SELECT count() FROM {db}.{table}')[0][0]:>8}")
        print("\n== events by type (FINAL: one row per event_id)")
        for row in wh.query(
            f"SELECT event_type, count(), uniqExact(device_id), round(sum(revenue), 2) "
            f"FROM {db}.events FINAL GROUP BY event_type ORDER BY count() DESC"
        ):
            print("  {:<14} {:>6} events {:>5} devices {:>10} revenue".format(*row))
        print("\n== a few events")
        for row in wh.query(
            f"SELECT ts, event_type, device_kind, substring(device_id, 1, 12), "
            f"user_id, category, substring(email_hash, 1, 12), revenue "
            f"FROM {db}.events ORDER BY ts LIMIT 8"
        ):
            print("  " + " | ".join(str(v) for v in row))
        _dashboards(wh)
    verdict = "OK" if written == accepted else "MISMATCH"
    print(
        f"\n{verdict}: {written} of {accepted} accepted events are in the warehouse "
        f"({o['warehouse_url']})"
    )
