"""Raw events → compact batches on the one-partition identity topic (partition-parallel).

faust's per-message path tops out near 12k events/s, so the raw topic is read here by a
plain aiokafka consumer in batches (its own consumer group, shared by every worker), each
raw partition's events packed into one message with their offsets. Raw offsets are committed
only after the batch was acknowledged by the broker; a batch re-sent after a crash or
rebalance is recognised downstream by those offsets and skipped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from trackpipe.settings import Settings
from trackpipe.suppression import SuppressionList

log = logging.getLogger(__name__)

# Field order of a compact event: see streams/engine.py.
_FIELDS = (
    "event_id",
    "ts_ms",
    "device_id",
    "device_kind",
    "user_id",
    "email_hash",
    "advertising_id",
    "event_type",
    "url",
    "channel",
    "utm_source",
    "device_type",
    "revenue",
    # For the signals stage (the person-attributed topic), after the identity fields.
    "category",
    "product_id",
    "currency",
    "campaign",
    "timezone",
    "consent",
    "site_id",
)
_MISSING = ("",) * len(_FIELDS)  # what a field the event lacks is packed as


def compact(
    offset: int, value: bytes, blocked: Callable[[dict], bool] | None = None
) -> list[Any] | None:
    """The fields identity and sessions need, or None for a record they cannot use (or one
    `blocked` refuses: an erased person's)."""
    try:
        event = orjson.loads(value)
        if not isinstance(event, dict) or event.get("is_bot"):
            return None
        if blocked is not None and blocked(event):
            return None
        row = [offset, *map(event.get, _FIELDS, _MISSING)]
        row[2] = int(row[2])
        revenue = float(row[13] or 0.0)
        # "nan" or "1e999" parse as floats; JSON (the batch, the rows) has no place for them.
        row[13] = revenue if math.isfinite(revenue) else 0.0
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None  # the sink dead-letters what is malformed; here it is only skipped
    return row if row[1] and row[3] else None


def pack(
    partition: int,
    records: list[tuple[int, bytes]],
    blocked: Callable[[dict], bool] | None = None,
) -> bytes:
    events = [c for c in (compact(o, v, blocked) for o, v in records) if c is not None]
    # `last` moves the applied offset on even when no record was usable.
    return orjson.dumps({"p": partition, "e": events, "last": records[-1][0]})


class Batcher:
    def __init__(
        self,
        settings: Settings,
        suppressions: SuppressionList | None = None,
        ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.target = settings.identity_topic("identity-in")
        self.sent_events = 0
        self.suppressed = 0
        # Events of erased persons are left out here; the agent checks again, in order
        # with the erase commands (this list may lag the topic by a poll).
        self.suppressions = suppressions
        self._ready = ready
        self._newest: dict[TopicPartition, int] = {}
        self._assigned: set[TopicPartition] = set()
        self._active_at: dict[TopicPartition, float] = {}  # last fetched a record, or assigned
        self._marked_at: dict[TopicPartition, float] = {}  # last idle marker sent
        self.clock = time.monotonic

    async def _pace(self, consumer: AIOKafkaConsumer, polled: dict) -> None:
        """Keep this batcher's partitions within half the allowed lateness of each other.

        The stage's watermark follows the slowest partition, so a partition read far ahead
        (a backlog, a historical import) only keeps sessions open and state large. A
        partition that has reached its end does not hold the others back.
        """
        for tp, messages in polled.items():
            for m in reversed(messages):
                row = compact(0, m.value) if m.value is not None else None
                if row is not None:
                    self._newest[tp] = max(self._newest.get(tp, 0), row[2])
                    break
        assigned = consumer.assignment()
        behind = []
        for tp in assigned:
            highwater = consumer.highwater(tp)
            at_end = highwater is not None and await consumer.position(tp) >= highwater
            if tp in self._newest and not at_end:
                behind.append(self._newest[tp])
        if not behind:
            consumer.resume(*assigned)
            return
        limit = min(behind) + int(self.settings.allowed_lateness_s * 500)
        ahead = {tp for tp in assigned if self._newest.get(tp, 0) > limit}
        consumer.pause(*ahead)
        consumer.resume(*(assigned - ahead))

    async def _idle(self, consumer: AIOKafkaConsumer, polled: dict) -> list[bytes]:
        """Markers for the assigned raw partitions read to their end and quiet for
        `identity_idle_s`: one at once, then one every 10 s (at most) while they stay so.

        The stage's watermark follows the slowest raw partition; without these, a partition
        no device writes to (a small site) would hold it back for good, and sessions would
        never close nor links apply. The marker's time, now minus the idle time, is the event
        time the partition is taken to have reached: live events carry times near now.
        """
        now = self.clock()
        assigned = consumer.assignment()
        for tp in assigned:
            if polled.get(tp) or tp not in self._assigned:
                self._active_at[tp] = now
        self._assigned = set(assigned)
        idle_s = self.settings.identity_idle_s
        markers = []
        for tp in sorted(assigned):
            if (
                now - self._active_at[tp] < idle_s
                or now - self._marked_at.get(tp, -math.inf) < min(idle_s, 10.0)
                or (highwater := consumer.highwater(tp)) is None
                or await consumer.position(tp) < highwater
            ):
                continue
            self._marked_at[tp] = now
            event_ms = int((time.time() - idle_s) * 1000)
            markers.append(orjson.dumps({"p": tp.partition, "e": [], "last": -1, "idle": event_ms}))
        return markers

    def _clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
        s = self.settings
        servers = s.kafka_bootstrap.split(",")
        consumer = AIOKafkaConsumer(
            s.topic_raw,
            bootstrap_servers=servers,
            group_id=f"{s.app_id}-identity-batcher",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.kafka_session_timeout_s * 1000),
            heartbeat_interval_ms=int(max(500, min(3000, s.kafka_session_timeout_s * 333))),
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=servers,
            acks="all",
            enable_idempotence=s.kafka_idempotence,
            linger_ms=5,
            max_request_size=8 * 1024 * 1024,
        )
        return consumer, producer

    def _blocked(self, event: dict) -> bool:
        if self.suppressions is not None and self.suppressions.blocks(event):
            self.suppressed += 1
            return True
        return False

    async def run(self) -> None:
        if self._ready is not None:
            await self._ready()  # the suppression list read to its end
        consumer, producer = self._clients()
        await producer.start()
        await consumer.start()
        try:
            while True:
                await self._step(consumer, producer)
        finally:
            await consumer.stop()
            await producer.stop()

    async def _step(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        size = self.settings.identity_batch_size
        polled = await consumer.getmany(
            timeout_ms=int(self.settings.identity_flush_seconds * 1000), max_records=size * 8
        )
        sends = [await producer.send(self.target, m) for m in await self._idle(consumer, polled)]
        if not any(polled.values()):
            await asyncio.gather(*sends)
            return
        commits: dict[TopicPartition, int] = {}
        for tp, messages in polled.items():
            records = [(m.offset, m.value) for m in messages if m.value is not None]
            for i in range(0, len(records), size):
                chunk = records[i : i + size]
                sends.append(
                    await producer.send(self.target, pack(tp.partition, chunk, self._blocked))
                )
                self.sent_events += len(chunk)
            if messages:
                commits[tp] = messages[-1].offset + 1
        await self._pace(consumer, polled)
        await asyncio.gather(*sends)  # every batch acknowledged before its offsets commit
        try:
            await consumer.commit(commits)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partitions: the next owner re-sends, downstream skips.
            log.warning("raw offsets not committed (%r); batches may be re-sent", exc)
