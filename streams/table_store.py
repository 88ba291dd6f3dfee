"""The tables' store: faust's memory store, with its changelog read in bulk on assignment.

faust rebuilds a memory table by passing every changelog record through its per-message
consumer path: about 4,000 records/s here, so four minutes before a worker holding a million
profiles answers again. When partitions are assigned, this store first reads them with a
plain batch consumer (the way the stitching batcher reads raw events) up to their end, then
tells faust's recovery where it stopped (`persisted_offset`, what the RocksDB store tells
it), so faust reads only what was written after that.

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
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores import STORES
from faust.stores.memory import Store
from faust.types import TP

log = logging.getLogger(__name__)

SCHEME = "changelog-memory"
FETCH_BYTES = 16 * 1024 * 1024
POLL_RECORDS = 50_000
STALL_SECONDS = 30.0  # no record for this long: give the rest to faust's recovery


class ChangelogStore(Store):
    """`changelog-memory://`: faust's memory store, loaded in bulk (see the module)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._loaded: dict[TP, int] = {}  # partition → last changelog offset in `data`
        self.bulk_records = 0  # read by the bulk loader, for the stats and the tests
        self.bulk_seconds = 0.0

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
        if not (self.table.key_type is bytes and self.table.value_type is bytes):
            return  # faust decodes other types on the way in: its own recovery does that
        topic = self.table.changelog_topic.get_topic_name()
        actives = {tp for tp in self.app.assignor.assigned_actives() if tp.topic == topic}
        for tp in set(self._loaded) - actives:  # no longer ours: its keys will be dropped
            del self._loaded[tp]
        todo = sorted(actives - set(self._loaded))
        if todo:
            await self._load(todo)

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        # faust drops the keys of every partition number not active (standbys' included):
        # those partitions must be read from their beginning next time.
        await super().on_recovery_completed(active_tps, standby_tps)
        for tp in set(self._loaded) - set(active_tps):
            del self._loaded[tp]

    def _bootstrap(self) -> list[str]:
        return [f"{url.host}:{url.port or 9092}" for url in self.app.conf.broker]

    async def _load(self, tps: list[TP]) -> None:
        started = time.perf_counter()
        # Keys left from an earlier time this worker held a partition: the changelog may no
        # longer have the tombstones that would delete them (compaction drops old ones).
        self._drop_partitions({tp.partition for tp in tps})
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap(),
            enable_auto_commit=False,
            max_partition_fetch_bytes=FETCH_BYTES,
            fetch_max_bytes=FETCH_BYTES * 2,
        )
        try:
            await consumer.start()
            try:
                loaded = await _read_to_end(consumer, tps, self._apply)
            finally:
                await consumer.stop()
        except Exception as exc:  # any failure: faust's own recovery reads it all instead
            log.warning("%s: bulk read failed (%r): faust recovers it", self.table.name, exc)
            self._drop_partitions({tp.partition for tp in tps})
            return
        count = sum(n for n, _ in loaded.values())
        for tp, (_, last) in loaded.items():
            self._loaded[TP(tp.topic, tp.partition)] = last
        self.bulk_records += count
        self.bulk_seconds += time.perf_counter() - started
        log.info(
            "%s: %d changelog records of %d partitions read in bulk in %.1fs",
            self.table.name,
            count,
            len(tps),
            time.perf_counter() - started,
        )

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


async def _read_to_end(
    consumer: AIOKafkaConsumer, tps: list[TP], apply: Any
) -> dict[TopicPartition, tuple[int, int]]:
    """Read `tps` from their beginning to their end as of now; apply each partition's records
    in order. Returns, per partition, (records read, last offset read; -1 for none)."""
    parts = [TopicPartition(tp.topic, tp.partition) for tp in tps]
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    ends = await consumer.end_offsets(parts)
    read = {tp: (0, -1) for tp in parts}
    pending = set()
    for tp in parts:
        if await consumer.position(tp) < ends[tp]:
            pending.add(tp)
        else:
            read[tp] = (0, ends[tp] - 1)  # empty, or compacted away: nothing before the end
    progress = time.monotonic()
    while pending:
        if time.monotonic() - progress > STALL_SECONDS:
            raise TimeoutError(f"no changelog records for {STALL_SECONDS}s: {sorted(pending)}")
        polled = await consumer.getmany(*pending, timeout_ms=1000, max_records=POLL_RECORDS)
        if polled:
            progress = time.monotonic()
        for tp, records in polled.items():
            records = [m for m in records if m.offset < ends[tp]]
            if records:
                apply(tp.partition, records)
                read[tp] = (read[tp][0] + len(records), records[-1].offset)
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
                read[tp] = (read[tp][0], ends[tp] - 1)
    return read


STORES.aliases[SCHEME] = f"{__name__}:ChangelogStore"
