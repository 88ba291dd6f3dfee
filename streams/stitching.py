"""The stitching agent: identity + sessions over the one-partition batch topic.

Only the worker that owns that partition runs the engine, so merges need no coordination and
one worker or three give the same result. The engine's state lives in memory; a faust Table
(changelog-backed, one partition, so its records stay in order) holds it for recovery:
- every `identity_flush_seconds` the agent (or its timer) writes ClickHouse rows and the
  topics' records (together), then a `wal` record with every changed state entry, then
  those entries one by one, and only then acknowledges the input. A crash half-way leaves
  the `wal` record, which loading replays, so the table never holds half a flush; rows
  written before the crash are written again with the same version, which
  ReplacingMergeTree collapses.
- input at or below the state's `version` (the last flushed input offset) is skipped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
import orjson
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.web import Request, Response, View

from schemas.signals import batch_message, merge_message
from schemas.warehouse import Warehouse
from streams.app import flush_every
from streams.batcher import Batcher
from streams.engine import ADID, DEVICE_ID, EMAIL, USER_ID, Engine, Output
from streams.table_store import stored_json
from trackpipe.settings import Settings
from trackpipe.suppression import SuppressionList

log = logging.getLogger(__name__)

WAL_MAX_BYTES = 32 * 1024 * 1024
# A record batch's size: under the broker's default message.max.bytes (1 MB) for topics
# that keep it, bigger for the state changelog (WAL_MAX_BYTES); fewer batches, fewer round
# trips (a partition has one batch in flight). A bigger record goes alone.
BATCH_BYTES = 512 * 1024
STATE_BATCH_BYTES = 4 * 1024 * 1024
MESSAGE_RECORDS = 1000
ATTRIBUTED_BATCH = 5000  # events per attributed message (the contract allows 10,000)


def _new_batch(size: int) -> BatchBuilder:
    return BatchBuilder(size, compression_type=0)


class RowWriter:
    """ClickHouse inserts on one thread, retried with backoff until they succeed."""

    def __init__(self, open_warehouse: Any) -> None:
        self._open = open_warehouse
        self._warehouse: Warehouse | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="identity-warehouse")

    def _insert(self, out: Output) -> None:
        if self._warehouse is None:
            self._warehouse = self._open()
        try:
            for table, rows in (
                ("identities", out.identities),
                ("sessions", out.sessions),
                ("device_sessions", out.device_sessions),
            ):
                # As JSON the server parses: the driver encodes columns in Python,
                # which was most of this thread's time, holding the GIL.
                self._warehouse.insert_dicts(table, rows)
            if out.erased_persons or out.erased_devices:
                self._erase(self._warehouse, out)
        except Exception:
            self._warehouse.close()
            self._warehouse = None
            raise

    @staticmethod
    def _erase(warehouse: Warehouse, out: Output) -> None:
        """Delete the erased persons' rows (idempotent; `[""]` never matches, and keeps an
        empty list from becoming Array(Nothing), which ClickHouse 18.16 refuses)."""
        params = {
            "persons": out.erased_persons or [""],
            "devices": out.erased_devices or [""],
            "ids": out.erased_ids or [""],
        }
        db = warehouse.database
        for table, where in (
            (
                "identities",
                "has(%(ids)s, concat(id_type, ':', id_value)) OR has(%(persons)s, person_id)",
            ),
            ("sessions", "has(%(persons)s, person_id) OR hasAny(devices, %(devices)s)"),
            ("device_sessions", "has(%(devices)s, device_id)"),
        ):
            warehouse.execute(f"ALTER TABLE {db}.{table} DELETE WHERE {where}", params)

    async def write(self, out: Output) -> None:
        delay = 0.2
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self._executor, self._insert, out)
                return
            except Exception as exc:
                log.warning("identity rows not written (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def close(self) -> None:
        if self._warehouse is not None:
            self._executor.submit(self._warehouse.close).result(timeout=30)
        self._executor.shutdown(wait=True)


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
        self.flushed: dict[str, int] = {}  # the counters as of the last completed flush
        self.seconds: dict[str, float] = {}  # where the time goes, for the benchmark
        self._lock = asyncio.Lock()  # the agent and the flush timer share the engine
        self._stream: faust.StreamT | None = None
        self._unacked: list[faust.EventT] = []
        self._applied = -1  # the newest input offset applied in memory
        self._flushed_at = time.monotonic()
        self.source = app.topic(
            settings.identity_topic("identity-in"),
            key_serializer="raw",
            value_serializer="raw",
            partitions=1,
        )
        self.changes = app.topic(
            settings.identity_topic("identity-changes"),
            key_serializer="raw",
            value_serializer="raw",
        )
        self.late = app.topic(
            settings.identity_topic("late"), key_serializer="raw", value_serializer="raw"
        )
        # Person-attributed events and merges feed the signals stage (docs/signals.md).
        self.attributed = app.topic(
            settings.topic_attributed, key_serializer="raw", value_serializer="raw"
        )
        # One partition: every entry lands in changelog partition 0, in write order, which
        # is what makes the `wal` record sufficient (`_write_state` writes there directly).
        self.table = app.Table(
            "identity-state",
            partitions=1,
            use_partitioner=True,
            key_type=bytes,
            value_type=bytes,
            # A `wal` record carries a whole flush: allow it more than Kafka's default 1 MB.
            extra_topic_configs={"max.message.bytes": str(WAL_MAX_BYTES)},
        )
        app.conf.producer_max_request_size = WAL_MAX_BYTES

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

    def load(self) -> Engine:
        engine = self.new_engine()
        wal = None
        for key, value in self.table.items():
            name = key.decode() if isinstance(key, bytes) else key
            if name == "wal":
                wal = orjson.loads(value)
            elif value is not None:
                engine.load(name, orjson.loads(value))
        for name, record in (wal or {}).items():  # replay a flush that may be incomplete
            engine.load(name, record)
        log.info(
            "identity state loaded: input offset %d, %d persons",
            engine.version,
            len(engine.graph.persons),
        )
        return engine

    def _took(self, part: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[part] = self.seconds.get(part, 0.0) + now - since
        return now

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
            sent = await self._produce(self._messages(out))
            t = self._took("topics", t)
            encoded = {name: stored_json(r) for name, r in out.state.items()}
            t = self._took("table", t)
            await asyncio.gather(*sent)
            await rows
        finally:
            rows.cancel()  # a no-op once written; on an error, stop retrying in the loop
        t = self._took("warehouse", t)  # what was left to wait for, of the rows and records
        if self.engine is not engine:
            return  # revoked meanwhile: only the owner writes state (it re-applies this input)
        await self._write_state(encoded)
        self._took("table", t)
        engine.version = version
        self.flushes += 1
        self.flushed = vars(engine.counters).copy()

    def _messages(self, out: Output) -> list[tuple[str, bytes, bytes]]:
        """The flush's topic records (topic, key, value). Several records per message:
        one Kafka message per record would cost more than everything else the stage does."""
        changes = [{"kind": "identity"} | r for r in out.identities] + out.changes
        topic = self.changes.get_topic_name()
        messages = [
            (topic, b"identity", orjson.dumps(changes[i : i + MESSAGE_RECORDS]))
            for i in range(0, len(changes), MESSAGE_RECORDS)
        ]
        topic = self.late.get_topic_name()
        messages += [
            (topic, b"late", orjson.dumps(out.late[i : i + MESSAGE_RECORDS]))
            for i in range(0, len(out.late), MESSAGE_RECORDS)
        ]
        # Events under the person they were applied to, then the merges: a loser's events
        # and its merge share the loser's key, so the signals stage sees them in that
        # order. A flush repeated after a crash sends them again; that stage
        # de-duplicates by event id.
        topic = self.attributed.get_topic_name()
        for pid, events in out.attributed.items():
            for i in range(0, len(events), ATTRIBUTED_BATCH):
                batch = batch_message(pid, events[i : i + ATTRIBUTED_BATCH])
                messages.append((topic, pid.encode(), batch))
        for loser, survivor in out.merges:
            messages.append((topic, loser.encode(), merge_message(loser, survivor)))
        return messages

    async def _produce(
        self,
        records: list[tuple[str, bytes, bytes | None]],
        partition: int | None = None,
        batch_bytes: int = BATCH_BYTES,
    ) -> list[asyncio.Future]:
        """Send records in record batches, per partition, in order; returns the futures of
        their delivery.

        Through faust (`Topic.send`, `Table.__setitem__`) each record costs a future, a
        serializer lookup and a produce request: more than the engine's work for it. Inside
        the agent faust would also hold a sent record back until the input's offset is
        committed, which is after the state. The partition is the key's, by the producer's
        own partitioner (what faust would pick), unless given.
        """
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        batches: dict[tuple[str, int], BatchBuilder] = {}
        sent = []
        for topic in {r[0] for r in records} if partition is None else ():
            await producer.partitions_for(topic)  # the partitioner reads the metadata
        for topic, key, value in records:
            p = (
                self.app.producer.key_partition(topic, key).partition
                if partition is None
                else partition
            )
            batch = batches.get((topic, p))
            if batch is None:
                batch = batches[(topic, p)] = _new_batch(batch_bytes)
            if batch.append(key=key, value=value, timestamp=None) is None:  # full
                sent.append(await producer.send_batch(batch, topic, partition=p))
                batch = batches[(topic, p)] = _new_batch(batch_bytes)
                batch.append(key=key, value=value, timestamp=None)  # a first record fits
        for (topic, p), batch in batches.items():
            sent.append(await producer.send_batch(batch, topic, partition=p))
        return sent

    async def _write_state(self, encoded: dict[str, bytes]) -> None:
        """The flush's `wal` record, then its entries, to the table's changelog and store.

        The same records `Table.__setitem__` would send, in the same order, to the
        changelog's only partition, which is what faust's recovery reads; they are
        acknowledged before the input is. The store gets what a changelog replay would.
        """
        store = self.table.data
        topic = self.table.changelog_topic.get_topic_name()
        # Each record is encoded once; the `wal` record is assembled from those bytes.
        wal = b"{%s}" % b",".join(orjson.dumps(n) + b":" + v for n, v in encoded.items())
        records: list[tuple[str, bytes, bytes | None]] = [(topic, b"wal", wal)]
        for name, value in encoded.items():
            key = name.encode()  # bytes, as keys come back from the changelog
            if value != b"null":
                records.append((topic, key, value))
            elif key in store:
                records.append((topic, key, None))  # a tombstone
        await asyncio.gather(*await self._produce(records, 0, STATE_BATCH_BYTES))
        for _, key, value in records:
            if value is None:
                del store[key]
            else:
                store[key] = value

    async def flush_due(self, force: bool = False) -> None:
        """Flush and acknowledge what was applied, when the interval has passed (or `force`).

        Called by the agent after each message and by a timer: faust waits for every
        unacknowledged message before it gives partitions up in a rebalance, so input must
        never wait for the next message to be acknowledged.
        """
        async with self._lock:
            engine, stream = self.engine, self._stream
            if engine is None or stream is None or not self._unacked:
                return
            if (
                not force
                and time.monotonic() - self._flushed_at < self.settings.identity_flush_seconds
            ):
                return
            if self._applied > engine.version:
                await self.flush(engine, self._applied)
            if self.engine is not engine:
                return  # revoked meanwhile: the next owner re-applies this input
            for event in self._unacked:
                await stream.ack(event)
            self._unacked = []
            self._flushed_at = time.monotonic()

    def register(self) -> None:
        async def stitch(stream: faust.StreamT) -> None:
            self._stream = stream
            async for event in stream.noack().events():
                erased = False
                async with self._lock:
                    if self.engine is None:
                        await self.follow_suppressions()
                        self.engine = self.load()
                        self._unacked = []
                    engine = self.engine
                    offset = event.message.offset
                    batch = orjson.loads(event.value)
                    if "erase" in batch:
                        # An erasure, in order with the batches: later events of the
                        # person are blocked even if the followed list has not caught up.
                        self.suppressions.add(batch.get("suppress", []))
                        if offset > engine.version:
                            pids = engine.erase(batch["erase"])
                            log.info("erasure: %d persons forgotten", len(pids))
                            erased = True
                    elif batch["p"] >= 0 and offset > engine.version:
                        t = time.perf_counter()
                        engine.apply(
                            batch["p"], self.allowed(batch["e"]), batch["last"], batch.get("idle")
                        )
                        self._took("engine_apply", t)
                    self._applied = max(self._applied, offset)
                    self._unacked.append(event)
                await self.flush_due(force=erased)

        async def on_revoked(*args: Any, **kwargs: Any) -> None:
            # Whoever gets the partition next loads the state from the table; if that is
            # this worker again, its in-memory engine may be stale.
            self.engine = None
            self._unacked = []
            self._applied = -1

        async def batch_raw() -> None:
            await self.batcher.run()

        self.app.agent(self.source, name="stitch")(stitch)
        flush_every(
            self.app,
            self.settings.identity_flush_seconds / 2,
            self.flush_due,
            functools.partial(self.flush_due, force=True),
        )
        self.app.on_partitions_revoked.connect(on_revoked)

        async def close_writer(sender: Any, **kwargs: Any) -> None:  # the input has stopped
            await asyncio.get_running_loop().run_in_executor(None, self.writer.close)

        self.app.on_before_shutdown.connect(close_writer)
        self.app.task(batch_raw)

        @self.app.page("/identity/")
        class Stats(View):
            async def get(view, request: Request) -> Response:  # noqa: N805
                engine = self.engine
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
                        "batched_events": self.batcher.sent_events,
                        "suppressed": self.batcher.suppressed + self.suppressed,
                        "flushes": self.flushes,
                        "flushed": self.flushed,
                        "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                    }
                )
