"""Erasure reaches the identity stage: its graph, open sessions and faust table forget the
person, and their devices' later events are neither stitched nor stored (real Kafka +
ClickHouse 18.16, the worker as a separate process)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from schemas.warehouse import connect
from streams.identity import person_id_for
from tests.integration.streams_harness import StreamsRun
from trackpipe.identity_traffic import _event, closing_events
from trackpipe.kafka_admin import read_all
from trackpipe.processes import http_get, run_trackpipe, stop

pytestmark = pytest.mark.integration

MINUTE = 60_000


@pytest.fixture
def run(kafka_bootstrap: str, clickhouse_db: str, uid: str, tmp_path: Path) -> Iterator[StreamsRun]:
    r = StreamsRun(kafka_bootstrap, clickhouse_db, uid, tmp_path)
    yield r
    for proc, _ in r.workers.values():
        stop(proc, signal.SIGINT)


def wait_for(check, what: str, run: StreamsRun, timeout_s: float = 90.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.3)
    logs = "\n".join(proc.tail(40) for proc, _ in run.workers.values())
    raise AssertionError(f"{what}: not after {timeout_s}s: {run.stats()}\n{logs}")


def test_erasure_reaches_the_identity_stage(run: StreamsRun, uid: str) -> None:
    cookie, app, user = f"c-{uid}", f"a-{uid}", f"u-{uid}"
    other = f"q-{uid}"
    t0 = int(time.time() * 1000) - 60 * MINUTE
    laptop, phone = (cookie, "cookie", "desktop"), (app, "app", "mobile")
    events = [
        _event(f"{uid}-1", t0, laptop, "page_view"),
        _event(f"{uid}-2", t0 + 1_000, laptop, "login", user_id=user),
        _event(f"{uid}-3", t0 + 2_000, phone, "screen_view", user_id=user),
        _event(f"{uid}-4", t0 + 3_000, (other, "cookie", "desktop"), "page_view"),
    ]
    # Past the allowed lateness (links applied), within the gap (sessions still open).
    closers = closing_events(events, 4, 11 * MINUTE)
    run.start("worker")
    run.produce(events, closers)
    run.wait_flushed(len(events) + len(closers))
    person = person_id_for(f"user:{user}")
    ids = run.identities()
    assert {ids[k][0] for k in (f"cookie:{cookie}", f"app:{app}", f"user:{user}")} == {person}
    assert any(r["person_id"] == person for r in run.rows("sessions"))
    wait_for(lambda: rows_of(run, cookie, app, user).get("events") == 3, "events stored", run)

    out = run_trackpipe(["erase", f"user:{user}"], run.overrides)
    assert "3 linked identifiers" in out
    wait_for(lambda: any(s["flushed"].get("erased") == 1 for s in run.stats()), "erased", run)
    with connect(str(run.overrides["warehouse_url"])) as wh:
        # The stage deleted their rows once more (rows it may have written meanwhile).
        [(stage_deletes,)] = wh.query(
            "SELECT count() FROM system.mutations WHERE database = %(db)s "
            "AND position(command, 'concat(id_type') > 0",
            {"db": wh.database},
        )
    assert stage_deletes == 1

    # The faust table (its changelog, latest record per key) holds nothing of them.
    live = live_state(run)
    assert f"p:{person}".encode() not in live and f"d:{cookie}".encode() not in live
    assert f"d:{app}".encode() not in live
    text = b"".join(live.values()).decode()
    assert cookie not in text and app not in text and user not in text
    assert f"cookie:{other}" in text  # the other person is still there
    # The warehouse holds nothing of them either.
    assert rows_of(run, cookie, app, user) == {}

    # A new anonymous event from the laptop, straight to the raw topic: not stitched to the
    # old person, not a new person, not stored. The other person's event goes through.
    after = closers[0]["ts_ms"] + 1_000
    run.produce(
        [
            _event(f"{uid}-5", after, laptop, "page_view"),
            _event(f"{uid}-6", after, (other, "cookie", "desktop"), "page_view"),
        ]
    )
    port = next(iter(run.workers.values()))[1]
    wait_for(
        lambda: orjson.loads(http_get(f"http://127.0.0.1:{port}/stats/")[1])["suppressed"] >= 1,
        "sink suppressed the laptop's event",
        run,
    )
    stats = run.wait_flushed(len(events) + len(closers) + 1)
    assert stats["suppressed"] >= 1
    assert f"cookie:{cookie}" not in run.identities()
    assert rows_of(run, cookie, app, user) == {}
    assert run.identities()[f"cookie:{other}"][0] == person_id_for(f"cookie:{other}")

    # Once the other person's new event is in the table, the laptop's is not.
    def with_new_event() -> str:
        text = b"".join(live_state(run).values()).decode()
        return text if f"{uid}-6" in text else ""

    text = wait_for(with_new_event, "the other person's new event in the table", run)
    assert cookie not in text and app not in text and user not in text


def live_state(run: StreamsRun) -> dict[bytes, bytes]:
    """The stage's faust table as its changelog holds it: the latest record per key."""
    changelog = f"{run.settings.app_id}-identity-state-changelog"
    table: dict[bytes, bytes | None] = {}
    for key, value in read_all(run.settings.kafka_bootstrap, changelog):
        table[key] = value  # type: ignore[index]
    return {k: v for k, v in table.items() if v is not None and k != b"wal"}


def rows_of(run: StreamsRun, cookie: str, app: str, user: str) -> dict[str, int]:
    """Rows naming the person, per table (tables without any are left out)."""
    filters = {
        "events": "has(%(d)s, device_id) OR user_id = %(u)s",
        "identities": "has(%(all)s, id_value)",
        "sessions": "person_id = %(p)s OR hasAny(devices, %(d)s)",
        "device_sessions": "has(%(d)s, device_id)",
    }
    params = {
        "d": [cookie, app],
        "u": user,
        "all": [cookie, app, user],
        "p": person_id_for(f"user:{user}"),
    }
    found = {}
    with connect(str(run.overrides["warehouse_url"])) as wh:
        for table, where in filters.items():
            sql = f"SELECT count() FROM {wh.database}.{table} FINAL WHERE {where}"
            [(n,)] = wh.query(sql, params)
            if n:
                found[table] = int(n)
    return found
