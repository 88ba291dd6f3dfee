"""The bulk-recovered memory store's bookkeeping: which offsets it reports to faust's
recovery, and which keys it drops (the batch read itself is proven on real Kafka in
tests/integration/test_table_store.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP

from streams import table_store
from streams.table_store import ChangelogStore

CHANGELOG = "app-profiles-changelog"


def record(partition: int, offset: int, key: bytes, value: bytes | None) -> Any:
    return SimpleNamespace(partition=partition, offset=offset, key=key, value=value)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> ChangelogStore:
    app = faust.App("app", store=f"{table_store.SCHEME}://")
    table = app.Table("profiles", partitions=2, key_type=bytes, value_type=bytes)
    store = table.data
    assert isinstance(store, ChangelogStore)
    store.changelog: dict[int, list[Any]] = {0: [], 1: []}  # what the broker holds

    async def read_to_end(consumer: Any, tps: list[TP], apply: Any) -> dict:
        read = {}
        for tp in tps:
            records = store.changelog[tp.partition]
            if records:
                apply(tp.partition, records)
            read[tp] = (len(records), records[-1].offset if records else -1)
        return read

    class NoConsumer:
        def __init__(self, **kwargs: Any) -> None: ...
        async def start(self) -> None: ...
        async def stop(self) -> None: ...

    monkeypatch.setattr(table_store, "_read_to_end", read_to_end)
    monkeypatch.setattr(table_store, "AIOKafkaConsumer", NoConsumer)
    store.actives = set()
    monkeypatch.setattr(app.assignor, "assigned_actives", lambda: set(store.actives))
    return store


def assign(store: ChangelogStore, *partitions: int) -> None:
    store.actives = {TP(CHANGELOG, p) for p in partitions}
    asyncio.run(store.on_rebalance(set(), set(), set()))


def test_assigned_partitions_are_loaded_and_their_last_offset_reported(store) -> None:
    store.changelog[0] = [
        record(0, 0, b"a", b"1"),
        record(0, 1, b"a", b"2"),
        record(0, 2, b"b", b"1"),
        record(0, 3, b"b", None),
    ]
    assign(store, 0, 1)
    assert dict(store.data) == {b"a": b"2"}
    assert store.persisted_offset(TP(CHANGELOG, 0)) == 3  # faust reads on from there
    assert store.persisted_offset(TP(CHANGELOG, 1)) == -1  # empty: from the beginning
    assert store.bulk_records == 4


def test_a_partition_kept_across_a_rebalance_is_not_read_again(store) -> None:
    store.changelog[0] = [record(0, 0, b"a", b"1")]
    assign(store, 0)
    store.changelog[0].append(record(0, 1, b"a", b"2"))
    assign(store, 0)
    assert store.bulk_records == 1 and store.data[b"a"] == b"1"  # faust reads offset 1 on


def test_offsets_follow_what_the_table_holds(store) -> None:
    assign(store, 0)
    tp = TP(CHANGELOG, 0)
    event = SimpleNamespace(key=b"a", value=b"x", message=SimpleNamespace(
        tp=tp, partition=0, offset=7, value=b"x"))  # fmt: skip
    store.apply_changelog_batch([event], lambda k: k, lambda v: v)  # faust's recovery
    assert store.persisted_offset(tp) == 7 and store.data[b"a"] == b"x"
    store.set_persisted_offset(tp, 9)  # a table write the broker acknowledged
    assert store.persisted_offset(tp) == 9
    store.set_persisted_offset(TP(CHANGELOG, 1), 5)  # not loaded here: nothing to report
    assert store.persisted_offset(TP(CHANGELOG, 1)) is None


def test_a_partition_given_up_is_read_from_its_beginning_when_it_comes_back(store) -> None:
    store.changelog[1] = [record(1, 0, b"x", b"1"), record(1, 1, b"gone", b"1")]
    assign(store, 0, 1)
    assign(store, 0)  # partition 1 moved to another worker...
    assert store.persisted_offset(TP(CHANGELOG, 1)) is None
    # ...which wrote on; compaction then dropped the tombstone of `gone`
    store.changelog[1] = [record(1, 0, b"x", b"1"), record(1, 5, b"x", b"2")]
    assign(store, 0, 1)
    assert store.data[b"x"] == b"2" and b"gone" not in store.data
    assert store.persisted_offset(TP(CHANGELOG, 1)) == 5


def test_partitions_whose_keys_faust_drops_lose_their_offset(store) -> None:
    store.changelog[1] = [record(1, 0, b"x", b"1")]
    assign(store, 0, 1)
    asyncio.run(store.on_recovery_completed({TP(CHANGELOG, 0)}, set()))
    assert b"x" not in store.data  # faust's memory store dropped partition 1's keys
    assert store.persisted_offset(TP(CHANGELOG, 1)) is None


def test_tables_of_other_types_are_left_to_faust(monkeypatch: pytest.MonkeyPatch) -> None:
    app = faust.App("app2", store=f"{table_store.SCHEME}://")
    table = app.Table("counts", partitions=1, default=int)  # faust decodes these itself
    monkeypatch.setattr(
        app.assignor, "assigned_actives", lambda: {TP(table.changelog_topic_name, 0)}
    )
    asyncio.run(table.data.on_rebalance(set(), set(), set()))
    assert table.data.persisted_offset(TP(table.changelog_topic_name, 0)) is None


def test_a_failed_bulk_read_leaves_the_partitions_to_faust(store, monkeypatch) -> None:
    store.changelog[0] = [record(0, 0, b"a", b"1")]
    assign(store, 0)

    async def broken(consumer: Any, tps: list[TP], apply: Any) -> dict:
        apply(1, [record(1, 0, b"half", b"1")])  # part of it applied, then the broker went
        raise ConnectionError("broker gone")

    monkeypatch.setattr(table_store, "_read_to_end", broken)
    assign(store, 0, 1)  # no exception: the worker goes on
    assert store.persisted_offset(TP(CHANGELOG, 1)) is None  # faust reads all of it
    assert b"half" not in store.data and store.data[b"a"] == b"1"


def test_a_read_that_stops_progressing_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stalled:  # the broker answers, but no record comes
        def assign(self, parts: Any) -> None: ...
        async def seek_to_beginning(self, *parts: Any) -> None: ...
        async def end_offsets(self, parts: Any) -> dict:
            return {tp: 10 for tp in parts}

        async def position(self, tp: Any) -> int:
            return 0

        async def getmany(self, *tps: Any, **kwargs: Any) -> dict:
            return {}

    monkeypatch.setattr(table_store, "STALL_SECONDS", 0.0)
    with pytest.raises(TimeoutError):
        asyncio.run(table_store._read_to_end(Stalled(), [TP(CHANGELOG, 0)], print))
