"""Sessions in event time: open sessions per owner (a person or a device), split on a gap.

Pure logic, no faust. An open session keeps its events (compact tuples), which makes every
operation order-independent: inserting an out-of-order event, or merging two persons'
sessions, re-sorts and re-splits on the gap, which equals sessionizing the union of their
events from scratch. The event ids double as the per-event de-duplication key.

A session is closed once the watermark (already lowered by the allowed lateness) reaches
`ended + gap`: no on-time event can join it any more.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from streams.identity import uuid5_text

# Compact event: (ts_ms, event_id, device, device_type, event_type, url, channel, source, revenue)
# A tuple in memory, an array in state records.
TS, EID, DEVICE, DEVICE_TYPE, KIND, URL, CHANNEL, SOURCE, REVENUE = range(9)
VIEWS = frozenset({"page_view", "screen_view"})
CONVERSIONS = frozenset({"purchase", "order_completed"})


Event = Sequence[Any]
_IDS: dict[str, str] = {}
_REVENUE = itemgetter(REVENUE)


@dataclass(eq=False)  # identity, not value, equality: sessions are mutable state
class Session:
    events: list[Event]  # sorted by (ts, event_id), unique event ids
    # Ids this session had before (its first event changed) and may have been written under,
    # by this worker or by one that died before its state was saved: the next rows
    # supersede them. Which ids were *written* depends on flush timing; which ids the
    # session *had* depends only on the input, so a successor supersedes them all.
    emitted: list[str] = field(default_factory=list)
    known: bool = field(default=True, repr=False)  # False: a lone new event being inserted
    # Changed since its last row: a flush writes rows only for these (a new or loaded
    # session counts as changed). Not state: a restored session is written again.
    changed: bool = field(default=True, repr=False)
    tally: _Tally | None = field(default=None, repr=False)  # for `summary`, not state

    @property
    def start(self) -> int:
        return self.events[0][TS]

    @property
    def end(self) -> int:
        return self.events[-1][TS]

    @property
    def session_id(self) -> str:
        first = self.events[0][EID]
        cached = _IDS.get(first)
        if cached is None:
            cached = _IDS[first] = uuid5_text("session:" + first)
            if len(_IDS) > 100_000:  # a cache, not state: bounded
                _IDS.clear()
        return cached


def _holds(session: Session, event: Event) -> bool:
    # A duplicate has the same time: scan only the tail at or after it.
    for e in reversed(session.events):
        if e[TS] < event[TS]:
            return False
        if e[EID] == event[EID]:
            return True
    return False


def _coalesce(sessions: Iterable[Session], gap: int) -> list[Session]:
    """Re-split the union of the sessions' events on the gap (duplicates dropped).

    Each input's former ids and its own id follow its first event, so the output session
    that absorbed it knows which rows it supersedes.
    """
    inputs = list(sessions)
    events: dict[str, Event] = {}
    for s in inputs:
        for e in s.events:
            events.setdefault(e[EID], e)
    out: list[Session] = []
    home: dict[str, Session] = {}
    for e in sorted(events.values(), key=lambda e: (e[TS], e[EID])):
        if out and e[TS] - out[-1].end < gap:
            out[-1].events.append(e)
        else:
            out.append(Session([e]))
        home[e[EID]] = out[-1]
    for s in inputs:
        target = home[s.events[0][EID]]
        known = [*s.emitted, s.session_id] if s.known else s.emitted
        target.emitted.extend(i for i in known if i not in target.emitted)
    return out


class Sessionizer:
    def __init__(self, gap_ms: int) -> None:
        self.gap = gap_ms
        self.open: dict[str, list[Session]] = {}
        # Heap of (end + gap, owner). An entry may be stale but never later than the owner's
        # first session's true closing time; every owner with open sessions has one.
        self._closing: list[tuple[int, str]] = []
        self.dirty: set[str] = set()

    def add(self, owner: str, event: Event) -> bool:
        """Insert an event; False when its event id is already in that session."""
        sessions = self.open.get(owner)
        if not sessions:  # the owner's only open session
            self.open[owner] = [Session([event])]
            heapq.heappush(self._closing, (event[TS] + self.gap, owner))
        elif self._extends_last(sessions[-1], event):
            # The common case: in order, within the gap of the newest session. No new heap
            # entry: the owner already has one, and a session that grows only closes later
            # (the entry goes stale and is re-queued when it comes up).
            newest = sessions[-1]
            newest.events.append(event)
            newest.changed = True
        elif not self._insert(owner, sessions, event):
            return False
        self.dirty.add(owner)
        return True

    def _insert(self, owner: str, sessions: list[Session], event: Event) -> bool:
        """The general case of `add` (out of order, or into an older session)."""
        ts = event[TS]
        near = [s for s in sessions if s.start - ts < self.gap and ts - s.end < self.gap]
        if any(_holds(s, event) for s in near):
            return False
        last = near[0].events[-1] if len(near) == 1 else None
        if last is not None and (ts, event[EID]) > (last[TS], last[EID]):
            near[0].events.append(event)  # in order, at the end of an older session
            near[0].changed = True
            return True
        elif not near:  # a new session of its own
            merged = Session([event])
            sessions.append(merged)
            if len(sessions) > 1 and sessions[-2].start > ts:
                sessions.sort(key=lambda s: s.start)
        else:
            rest = [s for s in sessions if all(s is not n for n in near)]
            # The new event is not a session yet: its id was never written.
            [merged] = _coalesce([*near, Session([event], known=False)], self.gap)
            sessions[:] = sorted([*rest, merged], key=lambda s: s.start)
        heapq.heappush(self._closing, (merged.end + self.gap, owner))
        return True

    def _extends_last(self, session: Session, event: Event) -> bool:
        """True if `event` sorts after the session's last event and is within the gap.

        An owner's sessions are at least a gap apart (every insert or merge re-splits on
        it), so no other session can be near such an event, and it cannot be a duplicate:
        the session's ids are unique and every event at its time sorts before it.
        """
        last = session.events[-1]
        ts, last_ts = event[TS], last[TS]
        if ts == last_ts:
            return event[EID] > last[EID]
        return last_ts < ts < last_ts + self.gap

    def absorb(self, loser: str, survivor: str) -> None:
        """Give the survivor the loser's open sessions, joined where they are within the gap."""
        moved = self.open.pop(loser, [])
        self.dirty.update((loser, survivor))
        if not moved:
            return
        merged = _coalesce([*self.open.get(survivor, []), *moved], self.gap)
        self.open[survivor] = merged
        for s in merged:
            heapq.heappush(self._closing, (s.end + self.gap, survivor))

    def next_close(self) -> int | None:
        """The earliest time at which some open session closes."""
        while self._closing:
            at, owner = self._closing[0]
            sessions = self.open.get(owner)
            if sessions and sessions[0].end + self.gap == at:
                return at
            heapq.heappop(self._closing)  # stale: the session grew, merged or closed
            if sessions:
                heapq.heappush(self._closing, (sessions[0].end + self.gap, owner))
        return None

    def close_due(self, at: int) -> list[tuple[str, Session]]:
        """Close every session whose `end + gap <= at`."""
        closed: list[tuple[str, Session]] = []
        while (nxt := self.next_close()) is not None and nxt <= at:
            _, owner = heapq.heappop(self._closing)
            sessions = self.open[owner]
            while sessions and sessions[0].end + self.gap <= at:
                closed.append((owner, sessions.pop(0)))
            if sessions:
                heapq.heappush(self._closing, (sessions[0].end + self.gap, owner))
            else:
                del self.open[owner]
            self.dirty.add(owner)
        return closed

    # Persistence
    def record(self, owner: str) -> list | None:
        sessions = self.open.get(owner)
        return [[s.events, s.emitted] for s in sessions] if sessions else None

    def load(self, owner: str, record: list | None) -> None:
        if not record:
            self.open.pop(owner, None)
            return
        self.open[owner] = [
            Session([tuple(e) for e in events], emitted) for events, emitted in record
        ]
        heapq.heappush(self._closing, (self.open[owner][0].end + self.gap, owner))


class _Tally:
    """A session's summary columns that take a pass over its events, folded in one event at
    a time. Events only ever join a session at its end (anything else builds new sessions),
    so a session written at many flushes folds each event once, not once per flush."""

    __slots__ = (
        "converted",
        "devices",
        "entry",
        "exit",
        "folded",
        "last",
        "path",
        "types",
        "views",
    )

    def __init__(self) -> None:
        self.folded = 0  # events[:folded] are in
        self.last: Any = None  # events[folded - 1]: tells that the list only grew
        self.path: list[str] = []
        self.devices: dict[str, None] = {}  # ordered by first appearance
        self.types: dict[str, None] = {}
        self.views = self.converted = 0
        self.entry = self.exit = ""  # the first and the last non-empty url

    def fold(self, events: list[Event]) -> None:
        for e in events[self.folded :]:
            device = e[DEVICE]
            if not self.path or self.path[-1] != device:
                self.path.append(device)
                self.devices[device] = None
            if e[DEVICE_TYPE]:
                self.types[e[DEVICE_TYPE]] = None
            if e[KIND] in VIEWS:
                self.views += 1
            elif e[KIND] in CONVERSIONS:
                self.converted = 1
            if e[URL]:
                self.exit = e[URL]
                self.entry = self.entry or self.exit
        self.folded = len(events)
        self.last = events[-1]


def _tally(session: Session) -> _Tally:
    events, tally = session.events, session.tally
    if tally is None or tally.folded > len(events) or events[tally.folded - 1] is not tally.last:
        tally = session.tally = _Tally()
    tally.fold(events)
    return tally


def summary(session: Session) -> dict[str, Any]:
    """The analyst's view of a session (without owner, state or version columns)."""
    events = session.events
    tally = _tally(session)
    first = events[0]
    return {
        "session_id": session.session_id,
        "started_ms": first[TS],
        "ended_ms": events[-1][TS],
        "events": len(events),
        "views": tally.views,
        # Copies: the row lives on (until written) while the tally keeps folding.
        "devices": list(tally.devices),
        "device_types": list(tally.types),
        "device_path": tally.path.copy(),
        "switches": len(tally.path) - 1,
        "channel": first[CHANNEL],
        "source": first[SOURCE],
        "entry_page": tally.entry,
        "exit_page": tally.exit,
        "converted": tally.converted,
        # Summed whole, in order, like the built-in always did: sum's float rounding
        # differs between Python versions, so a running total could differ from it.
        "revenue": round(sum(map(_REVENUE, events)), 2),
    }
