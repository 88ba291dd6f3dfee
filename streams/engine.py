"""Identity + sessions for one batch at a time: the state machine the stitching agent drives.

Pure logic, no faust, no Kafka. The agent hands it batches of compact events (one raw
partition per batch, with their raw offsets); it returns what changed: state records to
persist, rows for ClickHouse, identity changes and late events.

Order of work (docs/streams.md explains why each step is deterministic):
1. Skip events at or below the raw offset already applied for their partition
   (redelivery after a crash or rebalance is a no-op).
2. An event older than the watermark is late: reported, not sessionized.
3. Otherwise its identifiers are observed, the links it carries queued, and it joins the
   open sessions of its device and of its device's current person.
4. The watermark (slowest raw partition's newest event time minus the allowed lateness)
   moves on; links and session closes up to it are applied in time order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from streams.identity import IdentityGraph, Merge, Refusal, identifier_type, is_junk
from streams.sessions import DEVICE, Session, Sessionizer, summary

# A compact input event, as packed by the batcher (streams/batcher.py).
(
    OFFSET,
    EVENT_ID,
    TS_MS,
    DEVICE_ID,
    DEVICE_KIND,
    USER_ID,
    EMAIL,
    ADID,
    EVENT_TYPE,
    URL,
    CHANNEL,
    SOURCE,
    DEVICE_TYPE,
    REVENUE,
    CATEGORY,
    PRODUCT_ID,
    CURRENCY,
    CAMPAIGN,
    TIMEZONE,
    CONSENT,
    SITE_ID,
) = range(21)

NO_WATERMARK = -(2**62)
DEVICE_TYPES = ("cookie", "app")
# An event's identifiers besides its device's (`cookie:` or `app:` by its kind).
_OTHER_IDS = (("user:", USER_ID), ("email:", EMAIL), ("adid:", ADID))
# What the sessionizers keep of an event (streams/sessions.py), as a tuple: open sessions
# hold many events, and tuples of plain values are left alone by the garbage collector.
_SESSION_FIELDS = itemgetter(
    TS_MS, EVENT_ID, DEVICE_ID, DEVICE_TYPE, EVENT_TYPE, URL, CHANNEL, SOURCE, REVENUE
)


def _mentions(change: dict[str, Any], pids: set[str], keys: set[str]) -> bool:
    return bool({change.get(f) for f in ("loser", "survivor")} & pids) or bool(
        {change.get(f) for f in ("left", "right")} & keys
    )


def attributed(ev: list[Any]) -> dict[str, Any]:
    """A packed event as the signals stage reads it (schemas.signals.AttributedEvent)."""
    return {
        "event_id": ev[EVENT_ID],
        "ts_ms": ev[TS_MS],
        "event_type": ev[EVENT_TYPE],
        "site_id": ev[SITE_ID],
        "device_id": ev[DEVICE_ID],
        "device_kind": ev[DEVICE_KIND],
        "device_type": ev[DEVICE_TYPE],
        "channel": ev[CHANNEL],
        "category": ev[CATEGORY],
        "product_id": ev[PRODUCT_ID],
        "revenue": ev[REVENUE],
        "currency": ev[CURRENCY],
        "campaign": ev[CAMPAIGN],
        "email_hash": ev[EMAIL],
        "user_id": ev[USER_ID],
        "advertising_id": ev[ADID],
        "timezone": ev[TIMEZONE],
        "consent": ev[CONSENT] or [],
        "url": ev[URL],
    }


@dataclass
class Output:
    state: dict[str, Any] = field(default_factory=dict)  # table key → record (None deletes)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    device_sessions: list[dict[str, Any]] = field(default_factory=list)
    identities: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)  # for the identity topic
    late: list[list[Any]] = field(default_factory=list)
    # For the signals stage: each event under the person it was attributed to when applied,
    # and the merges (loser, survivor) in the order they happened.
    attributed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    merges: list[tuple[str, str]] = field(default_factory=list)
    # Erased since the last flush: the writer deletes their rows once more, in case rows
    # were written between the warehouse erasure and this stage applying it.
    erased_persons: list[str] = field(default_factory=list)
    erased_devices: list[str] = field(default_factory=list)
    erased_ids: list[str] = field(default_factory=list)  # `type:value`


@dataclass
class Counters:
    events: int = 0
    duplicates: int = 0
    late: int = 0
    unattributed: int = 0
    merges: int = 0
    refused: int = 0
    erased: int = 0  # persons forgotten by erasure


class Engine:
    def __init__(
        self,
        partitions: int,
        gap_ms: int,
        lateness_ms: int,
        limits: Mapping[str, int] | None = None,
        priority: Iterable[str] | None = None,
        blocklist: Iterable[str] = (),
        attribute: bool = False,
    ) -> None:
        self.attribute = attribute  # collect person-attributed events for the signals stage
        self.partitions = partitions
        self.lateness = lateness_ms
        self.graph = IdentityGraph(limits, *([priority] if priority else []))
        self.people = Sessionizer(gap_ms)
        self.devices = Sessionizer(gap_ms)
        self.blocklist = frozenset(v.lower() for v in blocklist)
        self.newest: dict[int, int] = {}  # raw partition → newest event time seen
        self.applied: dict[int, int] = {}  # raw partition → last raw offset applied
        self.watermark = NO_WATERMARK
        self.counters = Counters()
        self.version = -1  # the input offset the state includes
        self._out = Output()
        # Session id → (events, summary) of the person sessions emitted since the last
        # flush, for the device sessions with the same events (`_device_summary`).
        self._summaries: dict[str, tuple[list, dict[str, Any]]] = {}

    # ---- input --------------------------------------------------------------------------
    def identifiers(self, ev: list[Any]) -> list[str]:
        # Inline, not a helper per identifier: this runs for every event.
        owner, blocklist = self.graph.owner, self.blocklist
        keys: list[str] = []
        value = ev[DEVICE_ID]
        if value:
            key = f"app:{value}" if ev[DEVICE_KIND] == "app" else f"cookie:{value}"
            # A known identifier passed the junk check when it was first seen.
            if key in owner or not is_junk(value, blocklist):
                keys.append(key)
        if ev[USER_ID] or ev[EMAIL] or ev[ADID]:  # most events carry only the device's id
            for prefix, field_ in _OTHER_IDS:
                value = ev[field_]
                if value:
                    key = f"{prefix}{value}"
                    if key in owner or not is_junk(value, blocklist):
                        keys.append(key)
        return keys

    def apply(
        self,
        partition: int,
        events: Iterable[list[Any]],
        last: int = -1,
        idle_ms: int | None = None,
    ) -> None:
        """Apply one raw partition's batch; what changed accumulates until `flush`.

        `idle_ms`: the partition is idle (read to its end, quiet for a while): take its event
        time as at least that, so that it stops holding the watermark back.
        """
        if idle_ms is not None and idle_ms > self.newest.get(partition, NO_WATERMARK):
            self.newest[partition] = idle_ms
        done = self.applied.get(partition, -1)
        for ev in events:
            if ev[OFFSET] <= done:
                self.counters.duplicates += 1
                continue
            done = ev[OFFSET]
            self._ingest(partition, ev)
        self.applied[partition] = max(done, last)
        if len(self.newest) >= self.partitions:
            mark = min(self.newest.values()) - self.lateness
            if mark > self.watermark:
                self._advance(mark)

    def _ingest(self, partition: int, ev: list[Any]) -> None:
        ts = ev[TS_MS]
        if ts > self.newest.get(partition, NO_WATERMARK):
            self.newest[partition] = ts
        if ts < self.watermark:
            self.counters.late += 1
            self._out.late.append(ev)
            return
        self.counters.events += 1
        compact = _SESSION_FIELDS(ev)
        self.devices.add(ev[DEVICE_ID], compact)
        keys = self.identifiers(ev)
        if not keys:
            self.counters.unattributed += 1
            return
        graph, first = self.graph, keys[0]
        pid = graph.observe(first, ts)
        for other in keys[1:]:  # a link only reads its two identifiers' owners
            graph.observe(other, ts)
            graph.propose(first, other, ts)
        self.people.add(pid, compact)
        if self.attribute:
            self._out.attributed.setdefault(pid, []).append(attributed(ev))

    # ---- erasure ------------------------------------------------------------------------
    def erase(self, keys: Iterable[str]) -> list[str]:
        """Forget every person owning one of `keys` (`cookie:…`, `user:…`, …); returns their ids.

        Their record, index entries, pending links, open person sessions and their devices'
        open device sessions go; the next flush deletes their state entries (None) and writes
        no rows for them (erasure deletes the warehouse's rows itself). Unknown keys: no-op.
        """
        keys = set(keys)
        pids = {self.graph.owner[k] for k in keys if k in self.graph.owner}
        members = set(keys)
        for pid in pids:
            members |= set(self.graph.persons[pid].members)
        devices = {k.split(":", 1)[1] for k in members if identifier_type(k) in DEVICE_TYPES}
        for pid in pids:
            for session in self.people.open.get(pid, []):
                devices.update(e[DEVICE] for e in session.events)
        for pid in pids:
            self.graph.forget(pid)
            self.people.load(pid, None)
            self.graph.dirty.add(pid)  # the flush writes None: the table entry goes
        self.people.dirty -= pids
        for device in devices:
            if device in self.devices.open or device in self.devices.dirty:
                self.devices.load(device, None)
                self.devices.dirty.add(device)
        self.graph.changed -= members
        self.graph.drop_links(members)
        self._summaries = {}  # nothing of theirs kept, not even until the flush
        out = self._out  # rows produced since the last flush must not reach the warehouse
        out.sessions = [r for r in out.sessions if r["person_id"] not in pids]
        out.device_sessions = [r for r in out.device_sessions if r["device_id"] not in devices]
        out.changes = [c for c in out.changes if not _mentions(c, pids, members)]
        out.late = [ev for ev in out.late if not members.intersection(self.identifiers(ev))]
        for pid in pids:  # nor the signals stage (which erases its own state separately)
            out.attributed.pop(pid, None)
        out.merges = [(a, b) for a, b in out.merges if a not in pids and b not in pids]
        if pids or devices:
            out.erased_persons += sorted(pids)
            out.erased_devices += sorted(devices)
            out.erased_ids += sorted(members)
        self.counters.erased += len(pids)
        return sorted(pids)

    # ---- time ---------------------------------------------------------------------------
    def _advance(self, mark: int) -> None:
        """Apply links and person-session closes up to `mark`, in time order.

        A close at the same instant as a link goes first: an event exactly one gap after a
        session's last event starts a new session, so that session must not be merged.
        """
        while True:
            link = self.graph.next_link_ts()
            close = self.people.next_close()
            if close is not None and close <= mark and (link is None or close <= link):
                for owner, session in self.people.close_due(close):
                    self._emit_person(owner, session, final=True)
            elif link is not None and link < mark:
                self._link(self.graph.apply_next())
            else:
                break
        for device, session in self.devices.close_due(mark):
            self._emit_device(device, session, final=True)
        self.watermark = mark

    def _link(self, result: Merge | Refusal | None) -> None:
        if isinstance(result, Merge):
            self.counters.merges += 1
            self.people.absorb(result.loser, result.survivor)
            if self.attribute:
                self._out.merges.append((result.loser, result.survivor))
            self._out.changes.append(
                {
                    "kind": "merge",
                    "ts": result.ts,
                    "loser": result.loser,
                    "survivor": result.survivor,
                }
            )
        elif isinstance(result, Refusal):
            self.counters.refused += 1
            self._out.changes.append(
                {
                    "kind": "refused",
                    "ts": result.ts,
                    "left": result.left,
                    "right": result.right,
                    "reason": result.reason,
                }
            )

    # ---- output -------------------------------------------------------------------------
    @staticmethod
    def _rows(
        session: Session, row: dict[str, Any], final: bool, owner_column: str, owner: str
    ) -> list[dict]:
        """The session's row (its `summary`), then a tombstone for each id it had before.

        Each row is one dict built once: rows are nearly as many as events.
        """
        row["is_final"] = int(final)
        row["superseded_by"] = ""
        row[owner_column] = owner
        sid = row["session_id"]
        rows = [row]
        for old in session.emitted:
            if old != sid:
                rows.append({**row, "session_id": old, "superseded_by": sid})
        session.emitted = [sid]
        session.changed = False
        return rows

    def _emit_person(self, pid: str, session: Session, final: bool) -> None:
        row = summary(session)
        self._summaries[row["session_id"]] = (session.events.copy(), row.copy())
        self._out.sessions += self._rows(session, row, final, "person_id", pid)

    def _emit_device(self, device: str, session: Session, final: bool) -> None:
        row = self._device_summary(session)
        self._out.device_sessions += self._rows(session, row, final, "device_id", device)

    def _device_summary(self, session: Session) -> dict[str, Any]:
        """`summary(session)`, taken from a person session holding the same events if one
        was emitted since the last flush.

        Most device sessions are also a person session (one device within the gap: 89 % of
        the device rows on the benchmark's traffic), and both are emitted in the same step,
        the person's first (a flush writes persons, then devices; a close of the same events
        is due at the same time, persons first). A summary depends only on the events, so
        equal events (the same tuples: both sessionizers hold each event's one tuple) give
        an equal row.
        """
        hit = self._summaries.get(session.session_id)
        if hit is not None and hit[0] == session.events:
            return hit[1].copy()
        return summary(session)

    def flush(self, version: int) -> Output:
        """Everything changed since the last flush; `version` orders the rows (higher wins)."""
        out = self._out  # the _emit_* helpers below still append to it
        changed, dirty = self.graph.drain()
        dirty |= self.people.dirty  # in place: the order rows come in stays as it was
        self._flush_people(dirty)
        self._flush_devices()
        for rows in (out.sessions, out.device_sessions):
            for row in rows:
                row["version"] = version
        out.identities += self._identity_rows(changed, version)
        self.version = version
        out.state["meta"] = self.meta()
        self._out = Output()
        self._summaries = {}
        return out

    def _flush_people(self, dirty: set[str]) -> None:
        state = self._out.state
        for pid in dirty:
            for session in self.people.open.get(pid, ()):
                if session.changed:  # an unchanged session's last row still holds
                    self._emit_person(pid, session, final=False)
            record = self.graph.record(pid)
            if record is not None:
                record["s"] = self.people.record(pid)
            state[f"p:{pid}"] = record
        self.people.dirty = set()

    def _flush_devices(self) -> None:
        state = self._out.state
        for device in self.devices.dirty:
            for session in self.devices.open.get(device, ()):
                if session.changed:
                    self._emit_device(device, session, final=False)
            state[f"d:{device}"] = self.devices.record(device)
        self.devices.dirty = set()

    def _identity_rows(self, changed: set[str], version: int) -> list[dict[str, Any]]:
        owner, persons = self.graph.owner, self.graph.persons
        rows = []
        for key in changed:
            pid = owner[key]
            first, last = persons[pid].members[key]
            kind, _, value = key.partition(":")
            rows.append(
                {
                    "id_type": kind,
                    "id_value": value,
                    "person_id": pid,
                    "first_seen_ms": first,
                    "last_seen_ms": last,
                    "version": version,
                }
            )
        return rows

    # ---- persistence ----------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "newest": {str(p): t for p, t in self.newest.items()},  # JSON keys are strings
            "applied": {str(p): o for p, o in self.applied.items()},
            "watermark": self.watermark,
            "links": self.graph.pending_state(),
            "counters": vars(self.counters).copy(),
            "version": self.version,
        }

    def load(self, key: str, record: Any) -> None:
        """Restore one table entry (order-independent; a None record deletes)."""
        if key == "meta":
            self.newest = {int(p): t for p, t in record["newest"].items()}
            self.applied = {int(p): o for p, o in record["applied"].items()}
            self.watermark = record["watermark"]
            self.graph.load_pending(record["links"])
            self.counters = Counters(**record["counters"])
            self.version = record["version"]
        elif key.startswith("p:"):
            pid = key[2:]
            self.graph.forget(pid)
            self.people.load(pid, None)
            if record is not None:
                self.graph.load(pid, record)
                self.people.load(pid, record.get("s"))
        elif key.startswith("d:"):
            self.devices.load(key[2:], record)
