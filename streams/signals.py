"""The signals stage: person-attributed batches → profiles, audiences, signals, warehouse rows.

faust plumbing only; what a message does to a person is `streams.person_updates`.

- One faust agent on the attributed topic (keyed by person_id). Per message: read the
  person's state from the `signals-profiles` table, apply, write it back once.
- State is the profile as orjson bytes: compact in the store (1M profiles fit in memory)
  and one decode per message.
- Warehouse rows are buffered and inserted in batches on the sink's connection (chdb allows
  one per process). The stream does not ack its messages (`noack`) until their rows are in
  the warehouse, so committed offsets never run ahead of the warehouse. A message
  redelivered after a crash is recognised by its event ids and writes the same rows (same
  versions) again, which the ReplacingMergeTrees collapse.
- Identifiers → person_id live in a second table (`signals-identifiers`), fed through an
  internal topic keyed by identifier, so a lookup by identifier routes to its owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from faust.types import EventT, StreamT

from schemas.signals import (
    AbsorbRecord,
    AttributedBatch,
    AttributedMessage,
    BadAttributedMessageError,
    MergeRecord,
    parse_attributed,
)
from schemas.tables import (
    AUDIENCE_MEMBERS_COLUMNS,
    INTERESTS_COLUMNS,
    LIFECYCLE_MOMENTS_COLUMNS,
    PROFILES_COLUMNS,
)
from streams.app import flush_every
from streams.audiences import load_audiences
from streams.heap import tables_recovered
from streams.person_updates import Update, load_url_categories, on_absorb, on_batch, on_merge
from streams.profiles import SignalsConfig
from streams.sink import WarehouseSink
from streams.table_store import stored_json
from trackpipe.settings import Settings

log = logging.getLogger(__name__)

# Identifier kind in a profile → the event field the suppression list knows it by.
SUPPRESSION_FIELDS = {
    "cookie": "device_id",
    "app": "device_id",
    "user": "user_id",
    "email": "email_hash",
    "adid": "advertising_id",
}
COLUMNS = {
    "profiles": PROFILES_COLUMNS,
    "interests": INTERESTS_COLUMNS,
    "audience_members": AUDIENCE_MEMBERS_COLUMNS,
    "lifecycle_moments": LIFECYCLE_MOMENTS_COLUMNS,
}
FLUSH_ROWS = 20_000  # insert before this many rows are buffered, whatever the time


def config_from(settings: Settings) -> SignalsConfig:
    return SignalsConfig(
        half_life_days=settings.signals_half_life_days,
        weights=dict(settings.signals_weights),
        top_n=settings.signals_top_n,
        window_days=settings.signals_window_days,
        dedup_ids=settings.signals_dedup_ids,
        repeat_purchases=settings.signals_repeat_purchases,
        lapsed_days=settings.signals_lapsed_days,
        contact_events=frozenset(settings.signals_contact_events),
        optout_events=frozenset(settings.signals_optout_events),
        required_consent=settings.signals_required_consent,
        url_categories=load_url_categories(settings.signals_categories_file),
    )


def signals_topics(settings: Settings) -> list[str]:
    """The source topics the stage reads and writes (faust creates only its internal ones)."""
    return [settings.topic_attributed, settings.topic_signals]


@dataclass
class SignalsStats:
    messages: int = 0
    events_applied: int = 0
    redeliveries: int = 0
    merges: int = 0
    absorbed: int = 0
    bad_messages: int = 0
    erased: int = 0  # persons whose state was dropped because an identifier was erased
    signals_sent: int = 0
    rows_written: int = 0
    flushes: int = 0
    insert_failures: int = 0


class SignalsStage:
    def __init__(self, app: faust.App, settings: Settings, sink: WarehouseSink) -> None:
        self.app, self.settings, self.sink = app, settings, sink
        # Both raise at start-up with the file, audience and position: never half the rules.
        self.cfg = config_from(settings)
        self.audiences = load_audiences(settings.signals_audiences_file, self.cfg)
        self.stats = SignalsStats()

        # Raw keys everywhere: the person_id's UTF-8 bytes hash to the same partition in the
        # producer, the table's changelog and the web router (table_route).
        def raw() -> faust.Schema:  # one each: faust updates schemas in place
            return faust.Schema(
                key_type=str, value_type=bytes, key_serializer="raw", value_serializer="raw"
            )

        n = settings.topic_partitions
        self.attributed = app.topic(settings.topic_attributed, partitions=n, schema=raw())
        self.signals_out = app.topic(settings.topic_signals, schema=raw())
        self.dead = app.topic(settings.topic_dead, schema=raw())
        self.id_updates = app.topic(
            f"{settings.app_id}-signals-identifiers", internal=True, partitions=n, schema=raw()
        )
        # faust picks a table's serializers from its types: bytes → raw. Keys are therefore
        # the UTF-8 bytes of the person_id (or identifier) themselves.
        self.profiles = app.Table(
            "signals-profiles", partitions=n, key_type=bytes, value_type=bytes
        )
        self.identifiers = app.Table(
            "signals-identifiers", partitions=n, key_type=bytes, value_type=bytes
        )
        self._rows: dict[str, list[dict[str, Any]]] = {t: [] for t in COLUMNS}
        self._pending: list[tuple[StreamT, EventT]] = []
        self._first_pending = 0.0
        self._flush_lock = asyncio.Lock()
        suffix = "_all" if settings.warehouse_cluster else ""
        self._tables = {t: f"{t}{suffix}" for t in COLUMNS}

    def register(self) -> SignalsStage:
        self.app.agent(self.attributed, name="signals")(self._process)
        self.app.agent(self.id_updates, name="signals-identifiers")(self._index)
        flush_every(
            self.app, self.settings.signals_flush_seconds, self._flush_when_due, self._drain
        )
        return self

    @property
    def recovered(self) -> bool:
        return tables_recovered(self.app)

    async def _process(self, stream: StreamT) -> None:
        manual = stream.noack()
        async for event in manual.events():
            self.stats.messages += 1
            try:
                await self._handle(event)
            finally:
                self._pending.append((manual, event))
                if not self._first_pending:
                    self._first_pending = time.monotonic()
            if self._due():
                await self.flush()

    async def _handle(self, event: EventT) -> None:
        key = event.key if isinstance(event.key, str) else (event.key or b"").decode()
        try:
            message = parse_attributed(event.value)
            if isinstance(message, AttributedBatch) and message.person_id != key:
                raise BadAttributedMessageError("key is not the batch's person_id")
        except BadAttributedMessageError as exc:
            await self._dead_letter(event, str(exc))
            return
        try:
            update = self._apply(key, message)
        except (KeyError, TypeError, ValueError) as exc:
            # A record of the right shape whose content cannot be applied (a forged or
            # corrupt hand-over): dead-lettered, never retried forever.
            await self._dead_letter(event, f"cannot apply: {exc!r}")
            return
        if update is not None:
            await self._store(key, update)

    def _apply(self, key: str, message: AttributedMessage) -> Update | None:
        if len(self.sink.suppressions) and self._drop_erased(key, message):
            return None
        if isinstance(message, MergeRecord):
            self.stats.merges += key == message.merge.from_
            return on_merge(key, self.profiles.get(key.encode()), message.merge, self.cfg)
        if isinstance(message, AbsorbRecord):
            if key != message.absorb.into:
                raise ValueError("an absorb must be keyed by its survivor")
            update = on_absorb(
                self.profiles.get(key.encode()), message.absorb, self.cfg, self.audiences
            )
            self.stats.absorbed += update.changed
            return update
        raw = self.profiles.get(key.encode())
        if len(self.sink.suppressions):  # events of erased persons are not applied
            blocks = self.sink.suppressions.blocks
            events = [e for e in message.events if not blocks(e.model_dump())]
            if len(events) < len(message.events):
                message = message.model_copy(update={"events": events})
        update = on_batch(raw, message, self.cfg, self.audiences)
        self.stats.events_applied += update.applied
        self.stats.redeliveries += not update.changed
        return update

    def _drop_erased(self, key: str, message: AttributedMessage) -> bool:
        """Erased (trackpipe erase): the warehouse rows are gone; drop the stored state (a
        profile or a tombstone) and a handed-over profile of the person too."""
        raw = self.profiles.get(key.encode())
        if raw is not None and self.erased(orjson.loads(raw)):
            del self.profiles[key.encode()]
            self.stats.erased += 1
            return True
        return isinstance(message, AbsorbRecord) and self.erased(message.absorb.profile)

    def erased(self, profile: dict[str, Any]) -> bool:
        """Does the profile hold an identifier of an erased person?"""
        blocks = self.sink.suppressions.blocks
        return len(self.sink.suppressions) > 0 and any(
            blocks({SUPPRESSION_FIELDS[kind]: value})
            for kind, values in profile["ids"].items()
            for value in values
        )

    async def _store(self, key: str, update: Update) -> None:
        if update.state is None and update.changed:
            if key.encode() in self.profiles:
                del self.profiles[key.encode()]
        elif update.state is not None and update.changed:
            self.profiles[key.encode()] = stored_json(update.state)
        for table, rows in update.output.rows.items():
            self._rows[table].extend(rows)
        for signal in update.output.signals:
            await self.signals_out.send(key=signal["person_id"], value=orjson.dumps(signal))
            self.stats.signals_sent += 1
        for to, value in update.forward:
            await self.attributed.send(key=to, value=value)
        for identifier in update.new_identifiers:
            await self.id_updates.send(key=identifier, value=key.encode())

    async def _index(self, stream: StreamT) -> None:
        async for identifier, person_id in stream.items():
            value = person_id if isinstance(person_id, bytes) else str(person_id).encode()
            self.identifiers[str(identifier).encode()] = value

    def _due(self) -> bool:
        if not self._pending:
            return False
        waited = time.monotonic() - self._first_pending
        rows = sum(len(r) for r in self._rows.values())
        return rows >= FLUSH_ROWS or waited >= self.settings.signals_flush_seconds

    async def _flush_when_due(self) -> None:
        if self._due():
            await self.flush()

    async def _drain(self) -> None:
        if self._pending:
            await self.flush()

    async def flush(self) -> None:
        """Insert the buffered rows (retrying until the warehouse takes them), then ack."""
        async with self._flush_lock:
            rows, self._rows = self._rows, {t: [] for t in COLUMNS}
            pending, self._pending, self._first_pending = self._pending, [], 0.0
            for table, batch in rows.items():
                if batch:
                    await self._insert(table, batch)
            for stream, event in pending:
                await stream.ack(event)
            self.stats.flushes += 1

    async def _insert(self, table: str, batch: list[dict[str, Any]]) -> None:
        delay = 0.2
        while True:
            try:
                await self.sink.with_warehouse(
                    lambda wh: wh.insert(self._tables[table], COLUMNS[table], batch)
                )
                self.stats.rows_written += len(batch)
                return
            except Exception as exc:
                # Back-pressure: the agent waits here, nothing is acked, Kafka keeps the rest.
                self.stats.insert_failures += 1
                log.warning(
                    "signals: insert into %s failed (%r); retry in %.1fs", table, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _dead_letter(self, event: EventT, detail: str) -> None:
        message = event.message
        log.error(
            "signals: dead-lettering %s[%d]@%d: %s",
            message.topic,
            message.partition,
            message.offset,
            detail,
        )
        self.stats.bad_messages += 1
        letter = {
            "reason": "signals_rejected",
            "detail": detail[:1024],
            "source": "signals",
            "received_ms": int(time.time() * 1000),
            "raw": (message.value or b"")[:2048].decode("utf-8", "replace"),
        }
        await self.dead.send(key="signals_rejected", value=orjson.dumps(letter))
