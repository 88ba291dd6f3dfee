"""The warehouse sink: raw events → ClickHouse `events`, in batches, committed after insert.

A plain batch consumer (aiokafka `getmany`), run as a service inside the worker: faust's
per-message path tops out near 12k events/s, a batch poll reads ~40 times faster, and the
sink needs no per-event state. Guarantees:

- Offsets are committed only after the warehouse acknowledged the batch. A crash between
  insert and commit redelivers the batch; its rows carry the same `event_id` and the
  ReplacingMergeTree collapses them (read with FINAL or `uniqExact(event_id)`).
- While the warehouse is down or slow, the sink retries with exponential backoff and fetches
  nothing new: back-pressure (Kafka keeps the backlog), not an unbounded buffer.
- Rows the warehouse refuses for their content are isolated by bisecting the batch and sent to
  the dead-letter topic with the reason; every other row of the batch is written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from mode import Service

from schemas.warehouse import RowsRejectedError, Warehouse
from trackpipe.settings import Settings
from trackpipe.suppression import SuppressionList

log = logging.getLogger(__name__)

_REQUIRED = ("event_id", "event_type", "site_id", "device_id", "ts_ms", "received_ms")


class BadEventError(ValueError):
    """A record on the raw topic that cannot become a row."""


def parse_event(value: bytes | None) -> dict[str, Any]:
    """Check a raw record is an event the table can take; the row itself is the raw JSON."""
    try:
        event = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise BadEventError(f"not JSON: {exc}") from exc
    if not isinstance(event, dict) or any(k not in event for k in _REQUIRED):
        raise BadEventError("missing required fields")
    if not all(isinstance(event[k], int) and event[k] >= 0 for k in ("ts_ms", "received_ms")):
        raise BadEventError("ts_ms and received_ms must be epoch milliseconds")
    return event


@dataclass
class SinkStats:
    rows_written: int = 0
    batches: int = 0
    dead_letters: int = 0
    insert_failures: int = 0
    commit_failures: int = 0
    suppressed: int = 0
    # Wall-clock bounds of the work, for throughput figures (benchmarks/warehouse.py).
    first_fetch_at: float = 0.0
    last_write_at: float = 0.0


Pair = tuple[ConsumerRecord, bytes]
T = TypeVar("T")


class WarehouseSink(Service):
    def __init__(self, settings: Settings, open_warehouse: Callable[[], Warehouse]) -> None:
        super().__init__()
        self._settings = settings
        self._open = open_warehouse
        self._warehouse: Warehouse | None = None
        # One thread owns the warehouse connection; the event loop never blocks on I/O.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="warehouse")
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.stats = SinkStats()
        self.suppressions = SuppressionList(settings.kafka_bootstrap, settings.topic_suppressions)
        # On a cluster, writes go through the Distributed table to every shard.
        self._table = "events_all" if settings.warehouse_cluster else "events"

    async def on_start(self) -> None:
        s = self._settings
        bootstrap = s.kafka_bootstrap.split(",")
        self._consumer = AIOKafkaConsumer(
            s.topic_raw,
            bootstrap_servers=bootstrap,
            group_id=f"{s.app_id}-sink",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.sink_batch_size,
            session_timeout_ms=int(s.kafka_session_timeout_s * 1000),
            heartbeat_interval_ms=int(max(0.5, min(3.0, s.kafka_session_timeout_s / 3)) * 1000),
            # Backoff while the warehouse is down must not cost the group membership.
            max_poll_interval_ms=30 * 60 * 1000,
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=s.kafka_idempotence
        )
        await self._producer.start()
        # Read the suppression list to its end before writing anything: events of a person
        # erased while they were in flight must not come back.
        await asyncio.get_running_loop().run_in_executor(None, self.suppressions.start)
        await self._consumer.start()

    async def on_stop(self) -> None:
        self.suppressions.stop()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._warehouse is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._warehouse.close)
        self._executor.shutdown(wait=True)

    @Service.task
    async def _consume(self) -> None:
        # One batch is written while the next is fetched: the fetch and the insert overlap,
        # and commits stay in order because a batch starts only after the previous is done.
        writing: asyncio.Future[None] | None = None
        while not self.should_stop:
            records = await self._next_batch()
            if writing is not None:
                await writing
                writing = None
            if records:
                if not self.stats.first_fetch_at:
                    self.stats.first_fetch_at = time.time()
                writing = asyncio.ensure_future(self._write_and_commit(records))
        if writing is not None:
            await writing

    async def _next_batch(self) -> list[ConsumerRecord]:
        assert self._consumer is not None
        size, loop = self._settings.sink_batch_size, asyncio.get_running_loop()
        deadline = loop.time() + self._settings.sink_batch_seconds
        batch: list[ConsumerRecord] = []
        while len(batch) < size and not self.should_stop:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            fetched = await self._consumer.getmany(
                timeout_ms=int(remaining * 1000) + 1, max_records=size - len(batch)
            )
            for records in fetched.values():
                batch.extend(records)
        return batch

    async def _write_and_commit(self, records: list[ConsumerRecord]) -> None:
        pairs: list[Pair] = []
        for record in records:
            try:
                event = parse_event(record.value)
            except BadEventError as exc:
                await self._dead_letter(record, "sink_rejected", str(exc))
                continue
            if self.suppressions.blocks(event):
                self.stats.suppressed += 1
            else:
                pairs.append((record, record.value))
        if pairs:
            await self._write(pairs)
        if self._settings.sink_failpoint == "exit-after-insert":
            log.warning("failpoint exit-after-insert: exiting before the offsets are committed")
            os._exit(70)
        await self._commit(records)

    async def _write(self, pairs: list[Pair]) -> None:
        """Insert, retrying transient failures; bisect to isolate rows refused for content."""
        try:
            await self._insert_retrying([value for _, value in pairs])
        except RowsRejectedError as exc:
            if len(pairs) == 1:
                await self._dead_letter(pairs[0][0], "warehouse_rejected", str(exc))
                return
            middle = len(pairs) // 2
            await self._write(pairs[:middle])
            await self._write(pairs[middle:])

    async def _insert_retrying(self, rows: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            try:
                await loop.run_in_executor(self._executor, self._insert, rows)
                break
            except RowsRejectedError:
                raise
            except Exception as exc:
                self.stats.insert_failures += 1
                log.warning(
                    "warehouse insert of %d rows failed (%r); retrying in %.1fs",
                    len(rows),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self.stats.rows_written += len(rows)
        # Set with the count: a reader never sees rows written without when.
        self.stats.last_write_at = time.time()
        self.stats.batches += 1

    async def with_warehouse(self, work: Callable[[Warehouse], T]) -> T:
        """Run `work` on the sink's own connection and thread (chdb allows one per process)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: work(self._connection())
        )

    def _connection(self) -> Warehouse:
        if self._warehouse is None:
            self._warehouse = self._open()
        return self._warehouse

    def _insert(self, rows: list[bytes]) -> None:
        try:
            self._connection().insert_json(self._table, rows)
        except RowsRejectedError:
            raise
        except Exception:
            if self._warehouse is not None:
                self._warehouse.close()  # reconnect on the next attempt
                self._warehouse = None
            raise

    async def _commit(self, records: list[ConsumerRecord]) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, -1), r.offset + 1)
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partitions: their new owner re-reads the batch, and the
            # duplicate rows collapse on event_id.
            self.stats.commit_failures += 1
            log.warning("commit after insert failed (%r); the batch will be redelivered", exc)

    async def _dead_letter(self, record: ConsumerRecord, reason: str, detail: str) -> None:
        assert self._producer is not None
        log.error(
            "dead-lettering %s[%d]@%d: %s: %s",
            record.topic,
            record.partition,
            record.offset,
            reason,
            detail,
        )
        letter = {
            "reason": reason,
            "detail": detail[:1024],
            "source": "sink",
            "received_ms": int(time.time() * 1000),
            "raw": (record.value or b"")[:2048].decode("utf-8", "replace"),
        }
        await self._producer.send_and_wait(
            self._settings.topic_dead, key=reason.encode(), value=orjson.dumps(letter)
        )
        self.stats.dead_letters += 1
