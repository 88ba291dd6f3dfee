"""The engine against the offline reference, and its safety properties, without Kafka."""

from __future__ import annotations

import random
from typing import Any

import pytest

from streams.batcher import compact
from streams.engine import Engine
from tests.streams_reference import from_rows, reference
from trackpipe.identity_traffic import closing_events, generate, partition_for, shuffled

GAP = 30 * 60_000
LATENESS = 10 * 60_000
HORIZON = GAP + LATENESS + 1
LIMITS = {"user": 1, "email": 3, "app": 5, "adid": 5, "cookie": 20}


def run_engine(
    arrivals: list[dict], partitions: int = 4, batch: int = 50, seed: int = 1, flush_every: int = 3
) -> tuple[Engine, dict[str, list[dict[str, Any]]]]:
    """Feed events as the batcher would (per partition, with offsets), flushing now and then."""
    import orjson

    engine = Engine(partitions, GAP, LATENESS, LIMITS)
    queues: list[list[list]] = [[] for _ in range(partitions)]
    for e in arrivals:
        p = partition_for(e["device_id"], partitions)
        queues[p].append(compact(len(queues[p]), orjson.dumps(e)))
    for p, e in enumerate(closing_events(arrivals, partitions, HORIZON)):
        queues[p].append(compact(len(queues[p]), orjson.dumps(e)))
    rows: dict[str, list[dict[str, Any]]] = {
        "sessions": [],
        "device_sessions": [],
        "identities": [],
    }
    rng = random.Random(seed)
    version = 0
    cursors = [0] * partitions
    # Interleave partitions in random-sized chunks, like several batchers would.
    while any(c < len(q) for c, q in zip(cursors, queues, strict=True)):
        p = rng.choice([i for i in range(partitions) if cursors[i] < len(queues[i])])
        size = rng.randrange(1, batch)
        engine.apply(p, queues[p][cursors[p] : cursors[p] + size])
        cursors[p] += size
        version += 1
        if version % flush_every == 0:
            _collect(engine.flush(version), rows)
    _collect(engine.flush(version + 1), rows)
    return engine, rows


def _collect(out: Any, rows: dict[str, list[dict[str, Any]]]) -> None:
    rows["sessions"] += out.sessions
    rows["device_sessions"] += out.device_sessions
    rows["identities"] += out.identities


def latest_identities(rows: list[dict[str, Any]]) -> dict[str, tuple]:
    return {
        f"{r['id_type']}:{r['id_value']}": (r["person_id"], r["first_seen_ms"], r["last_seen_ms"])
        for r in sorted(rows, key=lambda r: r["version"])
    }


@pytest.fixture(scope="module")
def traffic() -> list[dict]:
    return generate(120)


@pytest.mark.parametrize("seed", [1, 3, 7, 11])
def test_matches_the_offline_reference_with_shuffled_arrival(
    traffic: list[dict], seed: int
) -> None:
    closers = closing_events(traffic, 4, HORIZON)
    ids, sessions, device_sessions = reference(traffic + closers, GAP, LIMITS)
    engine, rows = run_engine(shuffled(traffic, LATENESS // 2, seed=seed), seed=seed)
    assert engine.counters.late == 0 and engine.counters.events == len(traffic) + 4
    assert latest_identities(rows["identities"]) == ids
    assert from_rows(rows["sessions"], "person_id") == sessions
    assert from_rows(rows["device_sessions"], "device_id") == device_sessions
    # The traffic exercises what it should: cross-device sessions, merges and refusals.
    assert any(len(s[5]) > 1 for s in sessions)
    assert engine.counters.merges > 50 and engine.counters.refused > 0


def test_result_does_not_depend_on_batching_or_arrival(traffic: list[dict]) -> None:
    _, a = run_engine(shuffled(traffic, LATENESS // 2, seed=1), batch=5, seed=2, flush_every=1)
    _, b = run_engine(shuffled(traffic, LATENESS // 2, seed=9), batch=200, seed=5)
    assert from_rows(a["sessions"], "person_id") == from_rows(b["sessions"], "person_id")
    assert latest_identities(a["identities"]) == latest_identities(b["identities"])


def test_redelivered_batches_are_skipped(traffic: list[dict]) -> None:
    import orjson

    engine = Engine(1, GAP, LATENESS, LIMITS)
    batch = [compact(i, orjson.dumps(e)) for i, e in enumerate(traffic[:100])]
    engine.apply(0, batch[:60])
    engine.apply(0, batch[:80])  # a batcher re-sent after a crash, overlapping
    assert engine.counters.events == 80 and engine.counters.duplicates == 60


def test_events_beyond_the_lateness_are_reported_not_sessionized() -> None:
    import orjson

    base = generate(3)
    engine = Engine(1, GAP, LATENESS, LIMITS)
    engine.apply(0, [compact(i, orjson.dumps(e)) for i, e in enumerate(base)])
    stale = base[0] | {"event_id": "old", "ts_ms": base[-1]["ts_ms"] - LATENESS - 1}
    engine.apply(0, [compact(len(base), orjson.dumps(stale))])
    out = engine.flush(1)
    assert engine.counters.late == 1 and [e[1] for e in out.late] == ["old"]
    assert all(s["events"] for s in out.sessions)


def test_state_records_restore_an_identical_engine(traffic: list[dict]) -> None:
    import orjson

    half = len(traffic) // 2
    arrivals = [compact(i, orjson.dumps(e)) for i, e in enumerate(traffic)]
    original = Engine(1, GAP, LATENESS, LIMITS)
    table: dict[str, Any] = {}
    for chunk in (arrivals[:half], arrivals[half:]):
        original.apply(0, chunk)
        for key, record in original.flush(1).state.items():
            table[key] = orjson.loads(orjson.dumps(record))  # as the changelog would
    restored = Engine(1, GAP, LATENESS, LIMITS)
    for key, record in table.items():
        if record is not None:
            restored.load(key, record)
    assert restored.graph.owner == original.graph.owner
    assert restored.meta() == orjson.loads(orjson.dumps(original.meta()))
    assert {k: [s.events for s in v] for k, v in restored.people.open.items()} == {
        k: [s.events for s in v] for k, v in original.people.open.items()
    }


@pytest.mark.parametrize("crash_at", [5, 17, 40, 70, 88, 124])
def test_rows_of_a_flush_lost_in_a_crash_never_outlive_the_successor(
    traffic: list[dict], crash_at: int
) -> None:
    """An owner writes rows, then dies (or loses the partition) before its state reaches the
    table; the successor re-applies that input from older state with other flush boundaries.
    A session the dead owner wrote under an id that later changed (an earlier event arrived,
    or a merge) must still be superseded, although the successor never wrote that id."""
    import orjson

    partitions = 4
    queues: list[list[list]] = [[] for _ in range(partitions)]
    arrivals = shuffled(traffic, LATENESS // 2, seed=3)
    for e in arrivals:
        p = partition_for(e["device_id"], partitions)
        queues[p].append(compact(len(queues[p]), orjson.dumps(e)))
    for p, e in enumerate(closing_events(arrivals, partitions, HORIZON)):
        queues[p].append(compact(len(queues[p]), orjson.dumps(e)))
    rng = random.Random(crash_at)
    chunks, cursors = [], [0] * partitions
    while any(c < len(q) for c, q in zip(cursors, queues, strict=True)):
        p = rng.choice([i for i in range(partitions) if cursors[i] < len(queues[i])])
        size = rng.randrange(1, 20)
        chunks.append((p, queues[p][cursors[p] : cursors[p] + size]))
        cursors[p] += size
    assert crash_at + 10 < len(chunks)

    rows: dict[str, list[dict[str, Any]]] = {
        "sessions": [],
        "device_sessions": [],
        "identities": [],
    }
    table: dict[str, Any] = {}
    first = Engine(partitions, GAP, LATENESS, LIMITS)
    for version, (p, chunk) in enumerate(chunks[: crash_at + 10], start=1):
        first.apply(p, chunk)
        out = first.flush(version)
        _collect(out, rows)  # the rows reached ClickHouse…
        if version <= crash_at:  # …but the state only up to the crash
            table.update(orjson.loads(orjson.dumps(out.state)))
    successor = Engine(partitions, GAP, LATENESS, LIMITS)
    for key, record in table.items():
        if record is not None:
            successor.load(key, record)
    for version, (p, chunk) in enumerate(chunks[crash_at:], start=crash_at + 1):
        successor.apply(p, chunk)
        if version % 13 == 0:
            _collect(successor.flush(version), rows)
    _collect(successor.flush(len(chunks) + 1), rows)

    ids, sessions, device_sessions = reference(
        traffic + closing_events(arrivals, partitions, HORIZON), GAP, LIMITS
    )
    assert from_rows(rows["sessions"], "person_id") == sessions
    assert from_rows(rows["device_sessions"], "device_id") == device_sessions
    assert latest_identities(rows["identities"]) == ids


def test_a_flush_writes_rows_only_for_the_sessions_that_changed() -> None:
    import orjson

    def event(offset: int, eid: str, ts: int) -> list:
        return compact(offset, orjson.dumps({"event_id": eid, "ts_ms": ts, "device_id": "d1"}))

    t0 = 1_764_000_000_000
    engine = Engine(1, GAP, LATENESS, LIMITS)
    engine.apply(0, [event(0, "a", t0), event(1, "b", t0 + GAP + 1)])  # two open sessions
    first = engine.flush(1)
    assert len(first.sessions) == len(first.device_sessions) == 2
    engine.apply(0, [event(2, "c", t0 + GAP + 2)])
    second = engine.flush(2)
    [row] = second.sessions
    [device_row] = second.device_sessions
    assert row["session_id"] == device_row["session_id"] == first.sessions[1]["session_id"]
    assert row["events"] == 2 and row["is_final"] == 0


def test_rows_carry_exactly_their_tables_columns(traffic: list[dict]) -> None:
    """The rows go to ClickHouse as JSON lines, where a missing key would silently become
    the column's default: each row must hold every inserted column and nothing else."""
    from schemas.tables import DEVICE_SESSIONS_COLUMNS, IDENTITIES_COLUMNS, SESSIONS_COLUMNS

    _, rows = run_engine(traffic)
    for table, columns in (
        ("sessions", SESSIONS_COLUMNS),
        ("device_sessions", DEVICE_SESSIONS_COLUMNS),
        ("identities", IDENTITIES_COLUMNS),
    ):
        assert rows[table]
        assert {tuple(sorted(r)) for r in rows[table]} == {tuple(sorted(n for n, _ in columns))}


def test_a_device_session_shares_its_person_sessions_summary_only_when_equal(
    traffic: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams import engine as engine_module

    computed = []
    real = engine_module.summary
    monkeypatch.setattr(engine_module, "summary", lambda s: computed.append(s) or real(s))
    _, shared = run_engine(shuffled(traffic, LATENESS // 2, seed=3), seed=3)
    summaries = len(computed)
    monkeypatch.setattr(Engine, "_device_summary", lambda self, session: real(session))
    _, fresh = run_engine(shuffled(traffic, LATENESS // 2, seed=3), seed=3)
    assert shared == fresh  # the same rows, in the same order
    # Shared for most device rows (tombstones are copies of a row, not summaries);
    # computed for the rest: a person session over several devices differs from each.
    person_rows = sum(not r["superseded_by"] for r in fresh["sessions"])
    device_rows = sum(not r["superseded_by"] for r in fresh["device_sessions"])
    assert person_rows < summaries < person_rows + device_rows / 2


@pytest.mark.parametrize("revenue", ["nan", "inf", "-1e999", 1e999])
def test_a_revenue_that_is_not_a_finite_number_counts_as_none(revenue: object) -> None:
    import orjson

    event = generate(1)[0] | {"revenue": revenue}
    packed = compact(0, orjson.dumps(event))
    assert packed is not None and packed[13] == 0.0


def test_an_idle_partition_stops_holding_the_watermark_back() -> None:
    import orjson

    t0 = 1_764_000_000_000
    login = {"event_id": "a", "ts_ms": t0, "device_id": "d1", "user_id": "u1"}
    later = {"event_id": "b", "ts_ms": t0 + 5_000, "device_id": "d2", "user_id": "u1"}
    engine = Engine(2, GAP, LATENESS, LIMITS)
    engine.apply(0, [compact(0, orjson.dumps(login)), compact(1, orjson.dumps(later))])
    on = later | {"event_id": "c", "ts_ms": t0 + 2 * HORIZON}  # partition 0 moves on
    engine.apply(0, [compact(2, orjson.dumps(on))])
    out = engine.flush(1)
    # Partition 1 never had an event: no watermark, no link applied, nothing closed.
    assert engine.counters.merges == 0 and not any(r["is_final"] for r in out.sessions)
    engine.apply(1, [], idle_ms=t0 + 3 * HORIZON)  # the batcher's marker
    out = engine.flush(2)
    assert engine.counters.merges == 2  # d1, d2 and u1: one person
    final = [r for r in out.sessions if r["is_final"] and not r["superseded_by"]]
    assert [(r["events"], r["devices"]) for r in final] == [(2, ["d1", "d2"])]  # cross-device
    assert engine.newest[1] == t0 + 3 * HORIZON
    engine.apply(1, [], idle_ms=t0)  # an older marker never moves a partition back
    assert engine.newest[1] == t0 + 3 * HORIZON
