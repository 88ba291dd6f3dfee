"""Identity + sessions (and the interests downstream) on real Kafka and ClickHouse 18.16:
workers as separate processes.

Every run is compared with the offline reference (tests/streams_reference.py) over the same
events: generated traffic with several devices per person, late logins, a kiosk, junk ids,
arrival shuffled within half the allowed lateness, and one closing event per partition.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.signals import config_from
from tests.integration.streams_harness import StreamsRun, score_counts, score_diff
from tests.streams_reference import from_rows, reference, reference_interests
from trackpipe.identity_traffic import closing_events, generate, shuffled
from trackpipe.processes import stop
from trackpipe.reliability import record

pytestmark = pytest.mark.integration

GAP = 30 * 60_000
LATENESS = 10 * 60_000
LIMITS = {"user": 1, "email": 3, "app": 5, "adid": 5, "cookie": 20}


@pytest.fixture(scope="module")
def traffic() -> tuple[list[dict], list[dict], tuple]:
    events = generate(300, seed=5)
    closers = closing_events(events, 4, GAP + LATENESS + 1)
    return shuffled(events, LATENESS // 2), closers, reference(events + closers, GAP, LIMITS)


def assert_interests_match(run: StreamsRun, events: list[dict], expected: tuple) -> None:
    """The signals stage downstream: every person's interests as if computed in one go."""
    wanted = reference_interests(events, expected[0], config_from(run.settings))
    assert len({pid for pid, _ in wanted}) > 100  # the traffic has categories to score
    got = run.wait_interests(wanted)
    diff = score_diff(got, wanted)
    assert not diff, f"{diff}\n{score_counts(got, wanted)}\n{run.diagnosis()}"


@pytest.fixture
def run(kafka_bootstrap: str, clickhouse_db: str, uid: str, tmp_path: Path) -> Iterator[StreamsRun]:
    r = StreamsRun(kafka_bootstrap, clickhouse_db, uid, tmp_path)
    yield r
    for proc, _ in r.workers.values():
        stop(proc, signal.SIGINT)


def assert_matches_reference(
    run: StreamsRun, expected: tuple, fault: str | None = None, started: float = 0.0
) -> None:
    """Identities and sessions equal the reference; with `fault`, the outcome is recorded
    for docs/reliability.md first (sessions missing = lost, not in the reference = doubled)."""
    ids, sessions, device_sessions = expected
    got = from_rows(run.rows("sessions"), "person_id")
    if fault is not None:
        wrong_ids = sum(1 for k, v in run.identities().items() if ids.get(k) != v)
        record(
            fault,
            f"{sum(s[4] for s in sessions)} events of 300 persons",
            time.monotonic() - started,
            len(sessions - got),
            len(got - sessions),
            f"{len(sessions)} cross-device sessions, {len(ids)} identifiers "
            f"({wrong_ids} differing) compared with the offline reference; interests too",
        )
    assert run.identities() == ids
    assert got == sessions
    assert from_rows(run.rows("device_sessions"), "device_id") == device_sessions
    for table in ("sessions", "device_sessions"):
        rows, keys = run.counts(table, "session_id")
        assert rows == keys  # FINAL: exactly one row per session id


@pytest.mark.parametrize("workers", [1, 3])
def test_workers_match_the_offline_reference(run: StreamsRun, traffic, workers: int) -> None:
    events, closers, expected = traffic
    for n in range(workers):
        run.start(f"worker{n}")
    run.produce(events, closers)
    stats = run.wait_flushed(len(events) + len(closers))
    assert stats["flushed"]["late"] == 0 and stats["flushed"]["merges"] > 0
    assert_matches_reference(run, expected)
    assert_interests_match(run, events + closers, expected)


def assert_outcome(run: StreamsRun, traffic: tuple, fault: str, started: float) -> None:
    """Once every event is flushed: nothing late, and identities, sessions and interests equal
    the fault-free reference; the outcome is recorded for docs/reliability.md."""
    events, closers, expected = traffic
    stats = run.wait_flushed(len(events) + len(closers))
    assert stats["flushed"]["late"] == 0
    assert_matches_reference(run, expected, fault, started)
    assert_interests_match(run, events + closers, expected)


@pytest.mark.faults
@pytest.mark.parametrize("flushed, then_s", [(2, 0.0), (4, 3.0)], ids=["at", "after"])
def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(
    run: StreamsRun, traffic, flushed: int, then_s: float
) -> None:
    """Killed as a flush completes, or seconds after one: the successor then takes over
    input the victim had fetched and applied but not committed (the case in which faust's
    own consumer lost messages; streams/app.py)."""
    events, closers, _ = traffic
    started = time.monotonic()
    half = len(events) // 2
    run.start("victim")
    run.produce(events[:half])
    run.wait_flushed(half // flushed)
    time.sleep(then_s)
    victim, _ = run.workers.pop("victim")
    stop(victim, signal.SIGKILL)
    run.produce(events[half:], closers)
    run.start("successor")
    assert_outcome(
        run,
        traffic,
        "identity + sessions: worker SIGKILL mid-stream"
        + (f", {then_s:.0f} s after a flush" if then_s else "")
        + ", restarted",
        started,
    )


@pytest.mark.faults
def test_workers_leaving_and_joining_mid_stream_match_the_reference(
    run: StreamsRun, traffic
) -> None:
    """Two rebalances while events flow: a second worker joins, then the first leaves."""
    events, closers, _ = traffic
    started = time.monotonic()
    third = len(events) // 3
    run.start("first")
    run.produce(events[:third])
    run.wait_flushed(third // 2)
    run.start("joining")
    run.produce(events[third : 2 * third])
    first, _ = run.workers.pop("first")
    stop(first, signal.SIGINT)
    run.produce(events[2 * third :], closers)
    assert_outcome(
        run, traffic, "identity + sessions: a worker joins, then the first leaves", started
    )


def test_events_beyond_the_lateness_are_counted_and_published(run: StreamsRun, traffic) -> None:
    import orjson

    from trackpipe.kafka_admin import read_all

    events, closers, _ = traffic
    run.start("worker")
    run.produce(events, closers)
    run.wait_flushed(len(events) + len(closers))
    stale = events[0] | {"event_id": "too-late", "ts_ms": events[0]["ts_ms"] - 1}
    run.produce([stale])
    stats = run.wait_flushed(len(events) + len(closers) + 1)
    assert stats["flushed"]["late"] == 1
    late_topic = run.settings.identity_topic("late")
    published = [
        e for _, v in read_all(run.settings.kafka_bootstrap, late_topic) for e in orjson.loads(v)
    ]
    assert [e[1] for e in published] == ["too-late"]


def test_idle_partitions_stop_holding_sessions_and_links_back(run: StreamsRun, traffic) -> None:
    """No closing events, and one raw partition that never gets any: once the partitions
    are read to their end and quiet for `identity_idle_s`, every session closes and every
    link applies, as in the reference."""
    events, _, _ = traffic
    expected = reference(events, GAP, LIMITS)
    run.overrides["identity_idle_s"] = 2
    run.start("worker")
    run.produce(events, partitions=3)  # of 4
    run.wait_flushed(len(events))

    def live(table: str) -> list[dict]:
        return [r for r in run.rows(table) if not r["superseded_by"]]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = live("sessions")
        if rows and all(r["is_final"] for r in rows) and run.identities() == expected[0]:
            break
        time.sleep(0.5)
    assert_matches_reference(run, expected)
    assert all(r["is_final"] for r in live("sessions") + live("device_sessions"))
