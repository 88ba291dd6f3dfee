"""The stitching stage: identity + sessions over the one-partition batch topic.

Exactly one worker owns the stage: the member of the `<app_id>-identity-stitch` consumer
group that holds the input's only partition. It reads the state topic to its end, builds
the engine, seeks the input to the offset after the one the state includes, and applies
from there. Merges therefore need no coordination, and one worker or three give the same
result. Every `identity_flush_seconds` the owner writes ClickHouse rows and the topics'
records (together), then a `wal` record with every changed state entry, then those entries
one by one (streams/state_log.py). A crash half-way leaves the `wal` record, which loading
replays, so the state is always a whole flush; input after it is applied again by the next
owner, and the rows it writes carry the same versions, which ReplacingMergeTree collapses.

The input is read by a plain aiokafka consumer, not a faust agent: the state says where to
resume, so no committed offset is needed for correctness, and faust's consumer lost input
messages around rebalances (docs/streams.md, "Why not a faust agent and a faust Table for
the owner").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterable
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError
from faust.web import Request, Response, View

from schemas.signals import batch_message, merge_message
from streams.app import flush_every
from streams.batcher import Batcher
from streams.engine import ADID, DEVICE_ID, EMAIL, USER_ID, Engine, Output
from streams.state_log import (
    STATE_BATCH_BYTES,
    Record,
    read_state,
    send_batches,
    state_topic_configs,
)
from streams.table_store import stored_json
from streams.warehouse_rows import RowWriter
from trackpipe.kafka_admin import ensure_topics
from trackpipe.settings import Settings
from trackpipe.suppression import SuppressionList

log = logging.getLogger(__name__)

MESSAGE_RECORDS = 1000
ATTRIBUTED_BATCH = 5000  # events per attributed message (the contract allows 10,000)
STEP_MESSAGES = 16  # input messages applied between two looks at the flush interval


def state_topic(settings: Settings) -> str:
    # The name the faust Table that once held the state gave its changelog.
    return f"{settings.app_id}-identity-state-changelog"


def ensure_stage_topics(settings: Settings) -> None:
    """The stage's topics: its input and state with one partition each (one owner, records
    in order), the identity changes and late events with the pipeline's partition count."""
    ensure_topics(settings, [settings.identity_topic("identity-in")], partitions=1)
    ensure_topics(settings, [state_topic(settings)], partitions=1, configs=state_topic_configs())
    ensure_topics(settings, [settings.identity_topic(n) for n in ("identity-changes", "late")])


def engine_from_state(engine: Engine, state: Iterable[tuple[bytes | str, bytes]]) -> Engine:
    """`engine` loaded with the state topic's latest records, the `wal` record replayed over
    them (it completes a flush that may have been cut off half-way)."""
    wal = None
    for key, value in state:
        name = key.decode() if isinstance(key, bytes) else key
        if name == "wal":
            wal = orjson.loads(value)
        elif value is not None:
            engine.load(name, orjson.loads(value))
    for name, record in (wal or {}).items():
        engine.load(name, record)
    return engine


class _Ownership(ConsumerRebalanceListener):
    def __init__(self, stage: Stitching) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self.stage.input in revoked:
            await self.stage.give_up()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self.stage.input in assigned and self.stage.consumer is not None:
            # Nothing is read until the state says where to start (`_take_over`).
            self.stage.consumer.pause(self.stage.input)


class Stitching:
    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.engine: Engine | None = None
        self.suppressions = SuppressionList(settings.kafka_bootstrap, settings.topic_suppressions)
        self._following = asyncio.Lock()
        self.suppressed = 0
        self.batcher = Batcher(settings, self.suppressions, self.follow_suppressions)
        self.writer = RowWriter(settings.open_warehouse)
        self.flushes = 0
        self.takeovers = 0
        self.flushed: dict[str, int] = {}  # the counters as of the last completed flush
        self.seconds: dict[str, float] = {}  # where the time goes, for the benchmark
        self._lock = asyncio.Lock()  # the input loop and the flush timer share the engine
        self.input = TopicPartition(settings.identity_topic("identity-in"), 0)
        self.state_topic = state_topic(settings)
        self.consumer: AIOKafkaConsumer | None = None
        self._applied = -1  # the newest input offset applied in memory
        self._generation = 0  # counts revocations: a state read they overtook is dropped
        self._committed = -1
        self._keys: set[bytes] = set()  # state keys the topic holds a value for
        self._state_write: asyncio.Future | None = None
        self._flushed_at = time.monotonic()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self.topics = {
            "changes": settings.identity_topic("identity-changes"),
            "late": settings.identity_topic("late"),
            # Person-attributed events and merges feed the signals stage (docs/signals.md).
            "attributed": settings.topic_attributed,
        }

    async def follow_suppressions(self) -> None:
        """Read the suppression list to its end once, then follow it (a daemon thread)."""
        async with self._following:
            if not self.suppressions.started:
                await asyncio.get_running_loop().run_in_executor(None, self.suppressions.start)

    def allowed(self, events: list[list[Any]]) -> list[list[Any]]:
        """The batch without events the suppression list blocks (an erased person's)."""
        if not len(self.suppressions):
            return events
        kept = [
            ev
            for ev in events
            if not self.suppressions.blocks(
                {
                    "device_id": ev[DEVICE_ID],
                    "user_id": ev[USER_ID],
                    "email_hash": ev[EMAIL],
                    "advertising_id": ev[ADID],
                }
            )
        ]
        self.suppressed += len(events) - len(kept)
        return kept

    def new_engine(self) -> Engine:
        s = self.settings
        return Engine(
            partitions=s.topic_partitions,
            gap_ms=int(s.session_gap_s * 1000),
            lateness_ms=int(s.allowed_lateness_s * 1000),
            limits=s.identity_limits,
            priority=s.identity_priority,
            blocklist=s.identity_blocklist,
            attribute=s.signals_enabled,
        )

    def _took(self, part: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[part] = self.seconds.get(part, 0.0) + now - since
        return now

    # ---- ownership ----------------------------------------------------------------------
    async def _take_over(self, consumer: AIOKafkaConsumer) -> None:
        """Become the owner: the engine from the state topic, the input from after it."""
        await self.follow_suppressions()
        generation = self._generation
        try:
            state = await read_state(self.settings.kafka_bootstrap, self.state_topic)
        except Exception as exc:  # the broker busy or restarting: the next poll tries again
            log.warning("identity state not read (%r); trying again", exc)
            await asyncio.sleep(1.0)
            return
        async with self._lock:  # a flush of the engine given up may still hold it
            if generation != self._generation or self.input not in consumer.assignment():
                return  # revoked meanwhile: the next assignment reads the state again
            engine = engine_from_state(self.new_engine(), state.items())
            self._keys = set(state)
            self._applied = self._committed = engine.version
            self._flushed_at = time.monotonic()
            self.engine = engine
            self.takeovers += 1
            consumer.seek(self.input, engine.version + 1)
            consumer.resume(self.input)
        log.info(
            "identity state loaded: input offset %d, %d persons",
            engine.version,
            len(engine.graph.persons),
        )

    async def give_up(self) -> None:
        """The input partition was revoked: drop the engine (the next owner loads the state).

        A flush still writing rows stops before the state; one writing the state is let
        finish, so that the next owner reads it whole or not at all.
        """
        self.engine = None
        self._generation += 1
        write = self._state_write
        if write is not None and not write.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(write), 30.0)

    # ---- input ----------------------------------------------------------------------------
    def _apply(self, engine: Engine, offset: int, value: bytes) -> bool:
        """Apply one input message; True when it was an erasure (flushed at once)."""
        batch = orjson.loads(value)
        self._applied = offset
        if "erase" in batch:
            # An erasure, in order with the batches: later events of the person are
            # blocked even if the followed list has not caught up.
            self.suppressions.add(batch.get("suppress", []))
            pids = engine.erase(batch["erase"])
            log.info("erasure: %d persons forgotten", len(pids))
            return True
        if batch["p"] >= 0:
            t = time.perf_counter()
            engine.apply(batch["p"], self.allowed(batch["e"]), batch["last"], batch.get("idle"))
            self._took("engine_apply", t)
        return False

    async def consume(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap.split(","),
            group_id=f"{s.app_id}-identity-stitch",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.kafka_session_timeout_s * 1000),
            heartbeat_interval_ms=int(max(500, min(3000, s.kafka_session_timeout_s * 333))),
            max_partition_fetch_bytes=s.worker_fetch_bytes,
            fetch_max_bytes=max(s.worker_fetch_bytes, 52428800),
        )
        self.consumer = consumer
        consumer.subscribe([self.input.topic], listener=_Ownership(self))
        await consumer.start()
        try:
            while not self._stopping.is_set():
                await self._step(consumer)
        finally:
            try:
                await self.flush_due(force=True)  # what this owner applied, before it leaves
            finally:
                await consumer.stop()
                self._stopped.set()

    async def _step(self, consumer: AIOKafkaConsumer) -> None:
        # Short: a take-over, a stop and the flush interval are seen between two polls.
        wait_ms = int(min(self.settings.identity_flush_seconds / 2, 0.5) * 1000)
        # A bounded step: on a backlog, the flush interval is checked every few thousand
        # events, not after all a fetch brought (tens of MB: a flush that size took seconds
        # and held the input's rows, records and state in memory at once).
        polled = await consumer.getmany(timeout_ms=wait_ms, max_records=STEP_MESSAGES)
        if self.input not in consumer.assignment():
            return
        if self.engine is None:
            await self._take_over(consumer)
            return
        erased = False
        async with self._lock:
            engine = self.engine
            if engine is None:
                return  # revoked meanwhile
            for m in polled.get(self.input, ()):
                if m.offset > self._applied:  # a message applied already is not again
                    erased |= self._apply(engine, m.offset, m.value)
        await self.flush_due(force=erased)
        await self._commit(consumer)

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit the flushed input offset: not needed to resume (the state says where),
        but what an operator's lag monitoring reads."""
        engine = self.engine
        if engine is None or engine.version <= self._committed:
            return
        try:
            await consumer.commit({self.input: engine.version + 1})
            self._committed = engine.version
        except (KafkaError, IllegalStateError) as exc:
            log.debug("identity input offset not committed: %r", exc)

    async def stop_input(self) -> None:
        """Stop reading input, flush what was applied, leave the group (worker stopping)."""
        self._stopping.set()
        if self.consumer is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), 60.0)

    # ---- flushing -----------------------------------------------------------------------
    async def flush_due(self, force: bool = False) -> None:
        """Flush what was applied when the interval has passed (or `force`)."""
        async with self._lock:
            engine = self.engine
            if engine is None or self._applied <= engine.version:
                return
            if (
                not force
                and time.monotonic() - self._flushed_at < self.settings.identity_flush_seconds
            ):
                return
            await self.flush(engine, self._applied)
            self._flushed_at = time.monotonic()

    async def flush(self, engine: Engine, version: int) -> None:
        t = time.perf_counter()
        out = engine.flush(version)
        t = self._took("engine_flush", t)
        # Rows and the topics' records, then the state: the state is sent only once both are
        # written. The next owner re-applies only the input after the state, so rows or
        # records sent after it could be lost in a crash. The rows and the records do not
        # depend on each other: they go together, and the state is encoded while the
        # ClickHouse server parses the rows (the insert thread waits without the GIL).
        rows = asyncio.ensure_future(self.writer.write(out))
        try:
            sent = await self._send(self._messages(out))
            t = self._took("topics", t)
            # Each of its own length: orjson's output buffer is 4 KiB at least, and a flush
            # holds all of them at once (a backlog's first flush peaked 600 MB higher).
            encoded = {name: stored_json(r) for name, r in out.state.items()}
            t = self._took("table", t)
            await asyncio.gather(*sent)
            await rows
        finally:
            rows.cancel()  # a no-op once written; on an error, stop retrying in the loop
        t = self._took("warehouse", t)  # what was left to wait for, of the rows and records
        if self.engine is not engine:
            return  # revoked meanwhile: only the owner writes state (the next re-applies)
        self._state_write = asyncio.ensure_future(self._write_state(encoded))
        await self._state_write
        self._took("table", t)
        engine.version = version
        self.flushes += 1
        self.flushed = vars(engine.counters).copy()

    def _messages(self, out: Output) -> list[Record]:
        """The flush's topic records (topic, key, value). Several records per message:
        one Kafka message per record would cost more than everything else the stage does."""
        changes = [{"kind": "identity"} | r for r in out.identities] + out.changes
        topic = self.topics["changes"]
        messages: list[Record] = [
            (topic, b"identity", orjson.dumps(changes[i : i + MESSAGE_RECORDS]))
            for i in range(0, len(changes), MESSAGE_RECORDS)
        ]
        topic = self.topics["late"]
        messages += [
            (topic, b"late", orjson.dumps(out.late[i : i + MESSAGE_RECORDS]))
            for i in range(0, len(out.late), MESSAGE_RECORDS)
        ]
        # Events under the person they were applied to, then the merges: a loser's events
        # and its merge share the loser's key, so the signals stage sees them in that
        # order. A flush repeated after a crash sends them again; that stage
        # de-duplicates by event id.
        topic = self.topics["attributed"]
        for pid, events in out.attributed.items():
            for i in range(0, len(events), ATTRIBUTED_BATCH):
                batch = batch_message(pid, events[i : i + ATTRIBUTED_BATCH])
                messages.append((topic, pid.encode(), batch))
        for loser, survivor in out.merges:
            messages.append((topic, loser.encode(), merge_message(loser, survivor)))
        return messages

    async def _send(self, records: list[Record], **kw: Any) -> list:
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]

        def partition_of(topic: str, key: bytes) -> int:
            return self.app.producer.key_partition(topic, key).partition  # faust's choice

        return await send_batches(producer, partition_of, records, **kw)

    async def _write_state(self, encoded: dict[str, bytes]) -> None:
        """The flush's `wal` record, then its entries, to the state topic's only partition
        (so they stay in order); acknowledged before the flush counts as done."""
        topic = self.state_topic
        # Each record is encoded once; the `wal` record is assembled from those bytes.
        wal = b"{%s}" % b",".join(orjson.dumps(n) + b":" + v for n, v in encoded.items())
        records: list[Record] = [(topic, b"wal", wal)]
        keys = self._keys
        for name, value in encoded.items():
            key = name.encode()
            if value != b"null":
                records.append((topic, key, value))
                keys.add(key)
            elif key in keys:
                records.append((topic, key, None))  # a tombstone
                keys.discard(key)
        sent = await self._send(records, partition=0, batch_bytes=STATE_BATCH_BYTES)
        await asyncio.gather(*sent)

    # ---- wiring -------------------------------------------------------------------------
    def register(self) -> None:
        async def stitch() -> None:
            await self.consume()

        async def batch_raw() -> None:
            await self.batcher.run()

        self.app.task(stitch)
        self.app.task(batch_raw)
        flush_every(
            self.app,
            self.settings.identity_flush_seconds / 2,
            self.flush_due,
            functools.partial(self.flush_due, force=True),
        )

        async def stop(sender: Any, **kwargs: Any) -> None:  # faust's consumer has stopped
            await self.stop_input()
            await asyncio.get_running_loop().run_in_executor(None, self.writer.close)

        self.app.on_before_shutdown.connect(stop)
        register_stats(self)


def register_stats(stage: Stitching) -> None:
    @stage.app.page("/identity/")
    class Stats(View):
        async def get(view, request: Request) -> Response:  # noqa: N805
            engine = stage.engine
            return view.json(
                {
                    "owner": engine is not None,
                    "version": engine.version if engine else -1,
                    "counters": vars(engine.counters) if engine else {},
                    # Owners (persons, devices) with a session still open: 0 once the
                    # watermark has passed every session's end plus the gap.
                    "open": {
                        "persons": len(engine.people.open) if engine else 0,
                        "devices": len(engine.devices.open) if engine else 0,
                    },
                    "batched_events": stage.batcher.sent_events,
                    "suppressed": stage.batcher.suppressed + stage.suppressed,
                    "flushes": stage.flushes,
                    "takeovers": stage.takeovers,
                    "flushed": stage.flushed,
                    "seconds": {k: round(v, 3) for k, v in stage.seconds.items()},
                }
            )
