"""The tables' store: faust's memory store, with its changelog read in bulk before recovery.

faust rebuilds a memory table by passing every changelog record through its per-message
consumer path: about 4,000 records/s here, so four minutes before a worker holding a million
profiles answers again. Here, once faust's recovery knows which changelog partitions to
read and up to where (their highwaters), the partitions this store has not loaded yet are
read by a plain batch consumer (the way the stitching batcher reads raw events) up to that
point, and faust's recovery is told to start where that read stopped, as the RocksDB store
tells it through `persisted_offset`. faust then reads only what is left.

The read runs in faust's recovery task, not in the rebalance callback: the consumer group
does not heartbeat during that callback, and a long read there would get the worker thrown
out of its group. It stops at a time budget under faust's own timeout for that step; a
partition read part of the way is a valid prefix, and faust reads the rest.

The records are the ones faust would apply, in partition order (`None` deletes), so the table
ends up as faust's own recovery would leave it. Only tables of raw bytes (every table of this
project) are read in bulk: faust decodes other types on the way in, and recovers those itself.

Offsets are reported only for partitions loaded here and active ever since: a partition
that was revoked, or whose keys faust's memory store dropped, is read from its beginning
again. A stale offset only makes faust re-read records the table already holds, which
leaves every key at its last value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores import STORES
from faust.stores.memory import Store
from faust.types import TP

log = logging.getLogger(__name__)

SCHEME = "changelog-memory"
FETCH_BYTES = 16 * 1024 * 1024
POLL_RECORDS = 50_000
STALL_SECONDS = 30.0  # no record for this long: give the rest to faust's recovery
BUDGET_SHARE = 0.8  # of faust's timeout for building the offsets, where the read runs


def stored_json(value: Any) -> bytes:
    """`orjson.dumps(value)` in a bytes object of its own length: for what a store keeps.

    orjson hands back its output buffer as it grew it, never shrunk: at least 4 KiB, and past
    that the doubling that fitted (a 4.4 KB profile sits in a 64 KiB allocation, of which the
    pages written stay resident; see orjson#483). Kept in a table for as long as the person
    lives, every value cost its worker two to fifteen times its length: the growth the soak
    found (docs/reliability.md). The copy costs a memcpy; output sent on (topics, rows) is
    freed at once and needs none.
    """
    return bytes(memoryview(orjson.dumps(value)))


class ChangelogStore(Store):
    """`changelog-memory://`: faust's memory store, loaded in bulk (see the module)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._loaded: dict[TP, int] = {}  # partition → last changelog offset in `data`
        self.bulk_records = 0  # read by the bulk loader, for the stats and the tests

    # ---- what faust's recovery asks --------------------------------------------------------
    def persisted_offset(self, tp: TP) -> int | None:
        return self._loaded.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        # A table write acknowledged by the broker (faust calls this for each one sent
        # through `Table.__setitem__`): the data holds it.
        if tp in self._loaded and offset > self._loaded[tp]:
            self._loaded[tp] = offset

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None:
        batch = list(batch)
        super().apply_changelog_batch(batch, to_key, to_value)
        for event in batch:  # faust's recovery, reading on from where the bulk load stopped
            tp, offset = event.message.tp, event.message.offset
            if tp in self._loaded and offset > self._loaded[tp]:
                self._loaded[tp] = offset

    # ---- assignment ------------------------------------------------------------------------
    async def on_rebalance(
        self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0
    ) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        topic = self.table.changelog_topic.get_topic_name()
        actives = {tp for tp in self.app.assignor.assigned_actives() if tp.topic == topic}
        for tp in set(self._loaded) - actives:  # no longer ours: its keys will be dropped
            del self._loaded[tp]

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        # faust drops the keys of every partition number not active (standbys' included):
        # those partitions must be read from their beginning next time.
        await super().on_recovery_completed(active_tps, standby_tps)
        for tp in set(self._loaded) - set(active_tps):
            del self._loaded[tp]

    # ---- the bulk read ---------------------------------------------------------------------
    def wants(self, tp: TP) -> bool:
        """Read `tp` in bulk: a raw-bytes table's partition not loaded here yet."""
        raw = self.table.key_type is bytes and self.table.value_type is bytes
        return raw and tp not in self._loaded

    async def load(self, ends: dict[TP, int], budget_s: float) -> dict[TP, int]:
        """Read each partition from its beginning up to `ends` (exclusive) within `budget_s`;
        returns the last offset read per partition (a prefix where the budget ran out)."""
        started = time.perf_counter()
        tps = sorted(ends)
        # Keys left from an earlier time this worker held a partition: the changelog may no
        # longer have the tombstones that would delete them (compaction drops old ones).
        self._drop_partitions({tp.partition for tp in tps})
        consumer = AIOKafkaConsumer(
            bootstrap_servers=[f"{u.host}:{u.port or 9092}" for u in self.app.conf.broker],
            enable_auto_commit=False,
            max_partition_fetch_bytes=FETCH_BYTES,
            fetch_max_bytes=FETCH_BYTES * 2,
        )
        try:
            await consumer.start()
            try:
                read = await read_from_beginning(consumer, ends, self._apply, started + budget_s)
            finally:
                await consumer.stop()
        except Exception as exc:  # any failure: faust's own recovery reads it all instead
            log.warning("%s: bulk read failed (%r): faust recovers it", self.table.name, exc)
            self._drop_partitions({tp.partition for tp in tps})
            return {}
        loaded = {TP(tp.topic, tp.partition): last for tp, (_, last) in read.items()}
        self._loaded.update(loaded)
        count = sum(n for n, _ in read.values())
        self.bulk_records += count
        short = [str(tp) for tp in tps if loaded.get(tp, -1) < ends[tp] - 1]
        log.info(
            "%s: %d changelog records of %d partitions read in bulk in %.1fs%s",
            self.table.name,
            count,
            len(tps),
            time.perf_counter() - started,
            f"; faust reads the rest of {short}" if short else "",
        )
        return loaded

    def _drop_partitions(self, partitions: set[int]) -> None:
        for key in [k for k, p in self._key_partition.items() if p in partitions]:
            self.data.pop(key, None)
            del self._key_partition[key]

    def _apply(self, partition: int, records: list[Any]) -> None:
        data, owner = self.data, self._key_partition
        for m in records:
            key = m.key
            if m.value is None:
                data.pop(key, None)
                owner.pop(key, None)
            else:
                data[key] = m.value
                owner[key] = partition


async def read_from_beginning(
    consumer: AIOKafkaConsumer,
    ends: dict[TP, int],
    apply: Callable[[int, list[Any]], None],
    deadline: float,
) -> dict[TopicPartition, tuple[int, int]]:
    """Read each partition from its beginning up to its end (exclusive) or the deadline;
    apply each one's records in order. Returns per partition (records read, last offset
    read, or -1 for none)."""
    stop = {TopicPartition(tp.topic, tp.partition): end for tp, end in ends.items()}
    consumer.assign(list(stop))
    await consumer.seek_to_beginning(*stop)
    read = {tp: (0, -1) for tp in stop}
    pending = set()
    for tp, end in stop.items():
        if await consumer.position(tp) < end:
            pending.add(tp)
        else:
            read[tp] = (0, end - 1)  # empty, or compacted away: nothing before the end
    progress = time.perf_counter()  # the deadline's clock
    while pending and time.perf_counter() < deadline:
        if time.perf_counter() - progress > STALL_SECONDS:
            raise TimeoutError(f"no changelog records for {STALL_SECONDS}s: {sorted(pending)}")
        polled = await consumer.getmany(*pending, timeout_ms=1000, max_records=POLL_RECORDS)
        if polled:
            progress = time.perf_counter()
        for tp, records in polled.items():
            records = [m for m in records if m.offset < stop[tp]]
            if records:
                apply(tp.partition, records)
                read[tp] = (read[tp][0] + len(records), records[-1].offset)
        for tp in list(pending):
            if await consumer.position(tp) >= stop[tp]:
                pending.discard(tp)
                read[tp] = (read[tp][0], stop[tp] - 1)
    return read


def recover_in_bulk(app: faust.App) -> None:
    """Have faust's recovery read the partitions of `ChangelogStore` tables in bulk first.

    The hook is the step where faust has just built the highwaters and the start offsets of
    the active changelog partitions, in its recovery task; the start offsets it then seeks
    to become where the bulk read stopped.
    """
    recovery = app.tables.recovery
    build_offsets = recovery._build_offsets

    async def _build_offsets(consumer: Any, tps: Any, destination: Any, title: str) -> None:
        await build_offsets(consumer, tps, destination, title)
        if title != "active":
            return
        todo: dict[ChangelogStore, dict[TP, int]] = {}
        for tp in tps:
            store = getattr(recovery.tp_to_table.get(tp), "data", None)
            if isinstance(store, ChangelogStore) and store.wants(tp):
                todo.setdefault(store, {})[tp] = recovery.active_highwaters.get(tp, -1) + 1
        budget = app.conf.broker_request_timeout * BUDGET_SHARE
        started = time.perf_counter()
        for store, ends in todo.items():
            left = budget - (time.perf_counter() - started)
            for tp, last in (await store.load(ends, left)).items():
                if destination.get(tp) is None or last > destination[tp]:
                    destination[tp] = last

    recovery._build_offsets = _build_offsets


STORES.aliases[SCHEME] = f"{__name__}:ChangelogStore"
