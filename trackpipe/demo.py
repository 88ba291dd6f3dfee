"""`make demo`: the whole pipeline on embedded defaults, then what it computed.

Embedded broker (Tansu) + embedded warehouse (chdb) + the real collector and worker
processes (sink, identity + sessions, signals and audiences), fed by the built-in traffic
generator. No Docker, no root, no JVM.
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

DEMO_AUDIENCES = Path(__file__).with_name("demo_audiences.toml")


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
        # Fifteen days of traffic arrive in seconds, person after person: event time jumps
        # back and forth as in a historical import, so the allowed lateness covers all of it
        # (docs/streams.md) and no event is late.
        "allowed_lateness_s": 90 * 86_400,
        # Once the traffic stops, partitions quiet for 2 s release the watermark: every
        # session closes and its row is final.
        "identity_idle_s": 2,
        "signals_audiences_file": DEMO_AUDIENCES,
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
        identity = pipeline.wait_identity_settled(accepted)
        counters = identity.get("counters") or {}
        print(
            f"  identity + sessions: {counters.get('events', 0)} events applied, "
            f"{counters.get('merges', 0)} merges, {counters.get('refused', 0)} links refused; "
            + ("every session closed" if identity["settled"] else "NOT settled")
        )
        signals = pipeline.wait_signals_quiet()
        print(
            f"  signals: {signals.get('events_applied', 0)} events in "
            f"{signals.get('messages', 0)} messages, {signals.get('rows_written', 0)} rows "
            + ("written" if signals["settled"] else "(NOT settled)")
        )
        letters = read_all(str(o["kafka_bootstrap"]), "trackpipe.events.dead", idle_s=1.0)
    finally:
        pipeline.stop()  # the worker must let go of the chdb directory before we read it
        stop(broker)
    consistent = _report(o, written, accepted, letters, counters, persons)
    settled = identity["settled"] and signals["settled"]
    return 0 if written == accepted and gifs == len(beacons) and settled and consistent else 1


def _dashboards(wh: Warehouse) -> None:
    db = wh.database
    [(days, persons, devices)] = wh.query(
        f"SELECT uniqExact(day), uniqMerge(persons), uniqMerge(devices) FROM {db}.daily_activity"
    )
    print(
        f"\n== dashboards (raw events, before stitching): {devices} devices and {persons} "
        f"person keys (user id, else e-mail hash, else device) active over {days} days"
    )
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


def _people(wh: Warehouse, counters: dict[str, int], people: int) -> bool:
    """Persons, sessions and one journey; True when every applied event is in exactly one
    person session and one device session."""
    db = wh.database
    [(ids, persons, multi, web_and_app)] = wh.query(
        f"SELECT sum(n), count(), countIf(devices >= 2), countIf(web AND app) FROM ("
        f"  SELECT person_id, count() AS n, countIf(id_type IN ('cookie', 'app')) AS devices,"
        f"    max(id_type = 'cookie') AS web, max(id_type = 'app') AS app"
        f"  FROM {db}.identities FINAL GROUP BY person_id)"
    )
    print(
        f"\n== identity: {ids} identifiers stitched into {persons} persons; "
        f"{multi} seen on two devices or more, {web_and_app} on the web and in the app"
    )
    print(
        f"  (the traffic came from {people} people: a device whose beacons never carry a "
        f"user id or an e-mail address stays a person of its own)"
    )
    [(sessions, cross, switches, events, converted, revenue, still_open)] = wh.query(
        f"SELECT count(), countIf(length(devices) > 1), sum(switches), sum(events), "
        f"countIf(converted = 1), round(sum(revenue), 2), countIf(is_final = 0) "
        f"FROM {db}.sessions FINAL WHERE superseded_by = ''"
    )
    [(device_sessions, device_events)] = wh.query(
        f"SELECT count(), sum(events) FROM {db}.device_sessions FINAL WHERE superseded_by = ''"
    )
    print(
        f"== sessions: {sessions} per person ({cross} across devices, {switches} device "
        f"switches, {converted} converted, {revenue} revenue, {still_open} open); "
        f"{device_sessions} per device"
    )
    attributed = counters.get("events", 0) - counters.get("unattributed", 0)
    consistent = events == attributed and device_events == counters.get("events", 0)
    print(
        f"  events in person sessions {events} (attributed {attributed}), "
        f"in device sessions {device_events} (applied {counters.get('events', 0)}): "
        + ("each in exactly one" if consistent else "MISMATCH")
    )
    [(pid,)] = wh.query(
        f"SELECT person_id FROM {db}.identities FINAL WHERE id_type IN ('cookie', 'app') "
        f"GROUP BY person_id ORDER BY count() DESC, person_id LIMIT 1"
    )
    known = wh.query(
        f"SELECT id_type, substring(id_value, 1, 16) FROM {db}.identities FINAL "
        f"WHERE person_id = %(pid)s ORDER BY id_type, id_value",
        {"pid": pid},
    )
    print(f"\n== one person's journey: {pid}")
    print("  identifiers: " + ", ".join(f"{kind}:{value}" for kind, value in known))
    for row in wh.query(
        f"SELECT started_at, round((ended_ms - started_ms) / 60000), events, device_types, "
        f"channel, converted FROM {db}.sessions FINAL "
        f"WHERE superseded_by = '' AND person_id = %(pid)s ORDER BY started_ms",
        {"pid": pid},
    ):
        started, minutes, n, types, channel, bought = row
        print(
            f"  {started}  {minutes:>4.0f} min  {n:>2} events  {'+'.join(types):<20} "
            f"{channel or '(none)':<15} {'bought' if bought else ''}"
        )
    return consistent and still_open == 0


def _audiences(wh: Warehouse) -> None:
    db = wh.database
    print("\n== audiences (marketing consent required), members now")
    for audience, members in wh.query(
        f"SELECT audience, countIf(toUInt32(exited_at) = 0) AS members "
        f"FROM {db}.audience_members FINAL GROUP BY audience ORDER BY audience"
    ):
        print(f"  {audience:<24} {members:>5}")
    [(eligible, declined)] = wh.query(
        f"SELECT countIf(audience_eligible = 1), countIf(audience_eligible = 0) "
        f"FROM {db}.profiles FINAL WHERE merged_into = ''"
    )
    print(f"  persons who may be in audiences {eligible}, who declined marketing {declined}")
    print(
        "  lifecycle: "
        + ", ".join(
            f"{stage} {n}"
            for stage, n in wh.query(
                f"SELECT lifecycle, count() AS n FROM {db}.profiles FINAL "
                f"WHERE merged_into = '' GROUP BY lifecycle ORDER BY n DESC, lifecycle"
            )
        )
    )


def _report(
    o: dict[str, object],
    written: int,
    accepted: int,
    letters: list[tuple[bytes | None, bytes]],
    counters: dict[str, int],
    people: int,
) -> bool:
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
        consistent = _people(wh, counters, people)
        _audiences(wh)
    verdict = "OK" if written == accepted else "MISMATCH"
    print(
        f"\n{verdict}: {written} of {accepted} accepted events are in the warehouse "
        f"({o['warehouse_url']})"
    )
    return consistent
