"""The bulk-recovered memory store's bookkeeping: which offsets it hands faust's recovery,
and which keys it drops (the batch read itself is proven on real Kafka in
tests/integration/test_table_store.py)."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from types import SimpleNamespace
from typing import Any

import faust
import orjson
import pytest
from faust.types import TP

from streams import table_store
from streams.person_updates import Update
from streams.signals import SignalsStage
from streams.table_store import ChangelogStore, stored_json

CHANGELOG = "app-profiles-changelog"


def record(partition: int, offset: int, key: bytes, value: bytes | None) -> Any:
    return SimpleNamespace(partition=partition, offset=offset, key=key, value=value)


class NoConsumer:
    def __init__(self, **kwargs: Any) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> faust.App:
    """An app whose table's changelog is `app.changelog` (partition → records), read by the
    bulk loader as the broker would serve it up to the given ends, and whose recovery's own
    offset building is faust's rule for a table with nothing stored: earliest - 1."""
    app = faust.App("app", store=f"{table_store.SCHEME}://")
    app.table = app.Table("profiles", partitions=2, key_type=bytes, value_type=bytes)
    app.changelog = {0: [], 1: []}
    app.actives = set()

    async def read(consumer: Any, ends: dict, apply: Any, deadline: float) -> dict:
        out = {}
        for tp, end in ends.items():
            records = [r for r in app.changelog[tp.partition] if r.offset < end]
            if records:
                apply(tp.partition, records)
            out[tp] = (len(records), end - 1)
        return out

    async def faust_offsets(consumer: Any, tps: Any, destination: Any, title: str) -> None:
        for tp in tps:
            persisted = app.table.data.persisted_offset(tp)
            destination[tp] = -1 if persisted is None else persisted

    monkeypatch.setattr(table_store, "read_from_beginning", read)
    monkeypatch.setattr(table_store, "AIOKafkaConsumer", NoConsumer)
    monkeypatch.setattr(app.assignor, "assigned_actives", lambda: set(app.actives))
    app.tables.recovery._build_offsets = faust_offsets
    table_store.recover_in_bulk(app)
    return app


def assign(app: faust.App, *partitions: int) -> dict[TP, int]:
    """A rebalance, then faust's recovery building its start offsets: returns them."""
    tps = {TP(CHANGELOG, p) for p in partitions}
    app.actives = tps
    recovery = app.tables.recovery
    for tp in tps:
        recovery.tp_to_table[tp] = app.table
        recovery.active_highwaters[tp] = max((r.offset for r in app.changelog[tp.partition]),
                                             default=-1)  # fmt: skip
    asyncio.run(app.table.data.on_rebalance(set(), set(), set()))
    destination: dict[TP, int] = {}
    asyncio.run(recovery._build_offsets(None, tps, destination, "active"))
    return destination


def store(app: faust.App) -> ChangelogStore:
    assert isinstance(app.table.data, ChangelogStore)
    return app.table.data


def test_recovery_starts_where_the_bulk_read_stopped(app) -> None:
    app.changelog[0] = [
        record(0, 0, b"a", b"1"),
        record(0, 1, b"a", b"2"),
        record(0, 2, b"b", b"1"),
        record(0, 3, b"b", None),
    ]
    start = assign(app, 0, 1)
    assert dict(store(app).data) == {b"a": b"2"}
    assert start == {TP(CHANGELOG, 0): 3, TP(CHANGELOG, 1): -1}  # 1 is empty
    assert store(app).persisted_offset(TP(CHANGELOG, 0)) == 3
    assert store(app).bulk_records == 4


def test_standby_partitions_are_left_to_faust(app) -> None:
    app.changelog[0] = [record(0, 0, b"a", b"1")]
    tp = TP(CHANGELOG, 0)
    app.tables.recovery.tp_to_table[tp] = app.table
    destination: dict[TP, int] = {}
    asyncio.run(app.tables.recovery._build_offsets(None, {tp}, destination, "standby"))
    assert destination == {tp: -1} and not store(app).data


def test_a_partition_kept_across_a_rebalance_is_not_read_again(app) -> None:
    app.changelog[0] = [record(0, 0, b"a", b"1")]
    assign(app, 0)
    app.changelog[0].append(record(0, 1, b"a", b"2"))
    assert assign(app, 0) == {TP(CHANGELOG, 0): 0}  # faust reads offset 1 on itself
    assert store(app).bulk_records == 1 and store(app).data[b"a"] == b"1"


def test_offsets_follow_what_the_table_holds(app) -> None:
    assign(app, 0)
    tp = TP(CHANGELOG, 0)
    event = SimpleNamespace(key=b"a", value=b"x", message=SimpleNamespace(
        tp=tp, partition=0, offset=7, value=b"x"))  # fmt: skip
    store(app).apply_changelog_batch([event], lambda k: k, lambda v: v)  # faust's recovery
    assert store(app).persisted_offset(tp) == 7 and store(app).data[b"a"] == b"x"
    store(app).set_persisted_offset(tp, 9)  # a table write the broker acknowledged
    assert store(app).persisted_offset(tp) == 9
    store(app).set_persisted_offset(TP(CHANGELOG, 1), 5)  # not loaded here: nothing known
    assert store(app).persisted_offset(TP(CHANGELOG, 1)) is None


def test_a_partition_given_up_is_read_from_its_beginning_when_it_comes_back(app) -> None:
    app.changelog[1] = [record(1, 0, b"x", b"1"), record(1, 1, b"gone", b"1")]
    assign(app, 0, 1)
    assign(app, 0)  # partition 1 moved to another worker...
    assert store(app).persisted_offset(TP(CHANGELOG, 1)) is None
    # ...which wrote on; compaction then dropped the tombstone of `gone`
    app.changelog[1] = [record(1, 0, b"x", b"1"), record(1, 5, b"x", b"2")]
    assert assign(app, 0, 1)[TP(CHANGELOG, 1)] == 5
    assert store(app).data[b"x"] == b"2" and b"gone" not in store(app).data


def test_partitions_whose_keys_faust_drops_lose_their_offset(app) -> None:
    app.changelog[1] = [record(1, 0, b"x", b"1")]
    assign(app, 0, 1)
    asyncio.run(store(app).on_recovery_completed({TP(CHANGELOG, 0)}, set()))
    assert b"x" not in store(app).data  # faust's memory store dropped partition 1's keys
    assert store(app).persisted_offset(TP(CHANGELOG, 1)) is None


def test_a_failed_bulk_read_leaves_the_partitions_to_faust(app, monkeypatch) -> None:
    app.changelog[0] = [record(0, 0, b"a", b"1")]
    assign(app, 0)

    async def broken(consumer: Any, ends: dict, apply: Any, deadline: float) -> dict:
        apply(1, [record(1, 0, b"half", b"1")])  # part of it applied, then the broker went
        raise ConnectionError("broker gone")

    monkeypatch.setattr(table_store, "read_from_beginning", broken)
    start = assign(app, 0, 1)  # no exception: the worker goes on
    assert start[TP(CHANGELOG, 1)] == -1  # faust reads all of it
    assert store(app).persisted_offset(TP(CHANGELOG, 1)) is None
    assert b"half" not in store(app).data and store(app).data[b"a"] == b"1"


def test_tables_of_other_types_are_left_to_faust(monkeypatch: pytest.MonkeyPatch) -> None:
    app = faust.App("app2", store=f"{table_store.SCHEME}://")
    table = app.Table("counts", partitions=1, default=int)  # faust decodes these itself
    assert not table.data.wants(TP(table.changelog_topic_name, 0))


class Broker:
    """What `_read` sees of a consumer: `records` per partition, `per_poll` at a time."""

    def __init__(self, records: dict[Any, list[Any]], per_poll: int = 1) -> None:
        self.records, self.per_poll = records, per_poll
        self.at: dict[Any, int] = {}

    def assign(self, parts: Any) -> None: ...

    async def seek_to_beginning(self, *parts: Any) -> None:
        self.at = dict.fromkeys(parts, 0)

    async def position(self, tp: Any) -> int:
        return self.at[tp]

    async def getmany(self, *tps: Any, **kwargs: Any) -> dict:
        out = {}
        for tp in tps:
            batch = [r for r in self.records[tp] if r.offset >= self.at[tp]][: self.per_poll]
            if batch:
                out[tp] = batch
                self.at[tp] = batch[-1].offset + 1
        return out


def test_the_read_stops_at_the_given_end_and_at_the_deadline() -> None:
    tp = TP(CHANGELOG, 0)
    records = [record(0, i, b"k%d" % i, b"v") for i in range(6)]
    applied: list[int] = []

    def apply(partition: int, batch: list[Any]) -> None:
        applied.extend(r.offset for r in batch)

    broker = Broker({tp: records}, per_poll=2)
    read = asyncio.run(
        table_store.read_from_beginning(broker, {tp: 4}, apply, time.perf_counter() + 60)
    )
    assert applied == [0, 1, 2, 3] and read == {tp: (4, 3)}  # written later: faust's part
    applied.clear()
    read = asyncio.run(table_store.read_from_beginning(Broker({tp: records}), {tp: 6}, apply, 0.0))
    assert applied == [] and read == {tp: (0, -1)}  # no time at all: faust reads it all


def test_a_read_that_stops_progressing_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    tp = TP(CHANGELOG, 0)
    monkeypatch.setattr(table_store, "STALL_SECONDS", 0.0)
    broker = Broker({tp: []})  # the end says 10 records, none comes
    with pytest.raises(TimeoutError):
        asyncio.run(
            table_store.read_from_beginning(broker, {tp: 10}, print, time.perf_counter() + 60)
        )


def _bytes_held(make: Any, count: int = 50) -> float:
    """Memory allocated per object kept, as the allocator was asked for it."""
    tracemalloc.start()
    try:
        kept = [make() for _ in range(count)]
        return tracemalloc.get_traced_memory()[0] / len(kept)
    finally:
        tracemalloc.stop()


PROFILE = {"pid": "p1", "seen": {f"event-{i}": 1_764_000_000_000 + i for i in range(150)}}


def test_stored_json_holds_its_length_not_orjsons_buffer() -> None:
    """A value kept in a store costs its length: orjson's own buffer is a multiple of it."""
    encoded = stored_json(PROFILE)
    assert encoded == orjson.dumps(PROFILE)
    assert _bytes_held(lambda: stored_json(PROFILE)) < len(encoded) + 128


def test_profiles_are_stored_at_their_length() -> None:
    """The signals stage's table holds each profile in a bytes object of its own length."""
    stage = SimpleNamespace(
        profiles={}, _rows={}, stats=SimpleNamespace(signals_sent=0)
    )  # what `_store` touches for an update without rows, signals or messages
    update = Update(PROFILE, True)

    def store() -> bytes:
        asyncio.run(SignalsStage._store(stage, "p1", update))  # type: ignore[arg-type]
        return stage.profiles.pop(b"p1")

    kept = [store() for _ in range(5)]
    assert kept[0] == orjson.dumps(PROFILE)
    # the event loop's own allocations included
    assert _bytes_held(store, 20) < len(kept[0]) + 1024
