"""The identity graph: identifiers linked by co-occurrence, grouped into persons.

Pure logic, no faust: the agent in `streams/stitching.py` drives it and persists it.

Rules (docs/streams.md "Identity"):
- An identifier is a typed key, `type:value` (cookie, app, adid, user, email). Junk values
  (`undefined`, `null`, `0`, …) never become identifiers.
- Links are applied in event-time order (ts, then the pair), not in arrival order, once the
  watermark has passed them: that is what makes the per-type limits give the same answer
  with one worker or three, and after a replay.
- A person's id is uuid5 of its best identifier, best = lowest (type priority, key). It is a
  pure function of the person's members, so it survives restarts and re-processing.
- A link that would give a person more identifiers of one type than its limit is refused,
  and the refusal is reported.
"""

from __future__ import annotations

import hashlib
import heapq
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

NAMESPACE = uuid.UUID("5f0c6a52-8a8e-4c1e-9d3b-7d0b2f6b1a11")
TYPES = ("user", "email", "app", "adid", "cookie")
DEFAULT_LIMITS = {"user": 1, "email": 3, "app": 5, "adid": 5, "cookie": 20}

# PostHog's list (case-insensitive part), Segment's `^[0-]*$`, quoted variants, blanks.
_JUNK_ANY_CASE = {
    "anonymous",
    "guest",
    "distinct_id",
    "id",
    "not_authenticated",
    "email",
    "undefined",
    "true",
    "false",
    "null",
    "none",
    "nan",
    "[object object]",
    "unknown",
    "-1",
    "n/a",
}
_ZEROS = re.compile(r"^[0-]*$")


def is_junk(value: str, extra: frozenset[str] = frozenset()) -> bool:
    v = value.strip().strip("'\"").strip()
    return not v or bool(_ZEROS.match(v)) or v.lower() in _JUNK_ANY_CASE or v.lower() in extra


def identifier_type(key: str) -> str:
    return key.split(":", 1)[0]


_NAMESPACE_BYTES = NAMESPACE.bytes
# uuid5 sets the variant bits (10xx) in the first hex digit of the fourth group.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def uuid5_text(name: str) -> str:
    """`str(uuid.uuid5(NAMESPACE, name))` without the UUID object, which costs most of the
    time: it runs for every new identifier and every new session."""
    # SHA-1 because uuid5 is defined with it (a name, not a secret).
    h = hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def person_id_for(key: str) -> str:
    return uuid5_text(key)


@dataclass
class Person:
    best: str  # the identifier the person_id derives from
    members: dict[str, list[int]] = field(default_factory=dict)  # key → [first_ms, last_ms]


def _counts(*people: Person) -> dict[str, int]:
    """Identifiers per type of the people together, in one pass (a merge checks every
    limit). A plain dict: `Counter` construction and `+` cost more than the merge itself."""
    counts: dict[str, int] = {}
    for person in people:
        for key in person.members:
            kind = identifier_type(key)
            counts[kind] = counts.get(kind, 0) + 1
    return counts


@dataclass(frozen=True)
class Merge:
    ts: int
    loser: str  # person_id that no longer exists
    survivor: str


@dataclass(frozen=True)
class Refusal:
    ts: int
    left: str
    right: str
    reason: str


class IdentityGraph:
    def __init__(
        self,
        limits: Mapping[str, int] | None = None,
        priority: Iterable[str] = TYPES,
    ) -> None:
        self.limits = dict(DEFAULT_LIMITS if limits is None else limits)
        self._rank = {kind: i for i, kind in enumerate(priority)}
        self.persons: dict[str, Person] = {}
        self.owner: dict[str, str] = {}  # identifier → person_id
        # Heap of (ts, a, b), a < b. A pair seen again earlier than queued is pushed again
        # with its earlier time; the entry whose time no longer matches is stale and skipped.
        self.pending: list[tuple[int, str, str]] = []
        self._pending_ts: dict[tuple[str, str], int] = {}  # pair → the time it applies at
        self.changed: set[str] = set()  # identifiers whose row changed (since last drain)
        self.dirty: set[str] = set()  # person_ids whose record changed (since last drain)

    def _order(self, key: str) -> tuple[int, str]:
        return (self._rank.get(identifier_type(key), len(self._rank)), key)

    def observe(self, key: str, ts: int) -> str:
        """Record a sighting; a new identifier becomes a person of its own. Returns person_id."""
        pid = self.owner.get(key)
        if pid is None:
            pid = person_id_for(key)
            self.persons[pid] = Person(key, {key: [ts, ts]})
            self.owner[key] = pid
        else:
            seen = self.persons[pid].members[key]
            if ts >= seen[0] and ts <= seen[1]:
                return pid
            seen[0], seen[1] = min(seen[0], ts), max(seen[1], ts)
        self.changed.add(key)
        self.dirty.add(pid)
        return pid

    def propose(self, a: str, b: str, ts: int) -> None:
        """Queue a link seen on an event; it is applied when the watermark passes `ts`."""
        if a == b or (a in self.owner and self.owner[a] == self.owner.get(b)):
            return  # already one person: nothing to decide
        pair = (a, b) if a < b else (b, a)
        # The earliest sighting decides when the link applies, whatever the arrival order:
        # the same pair seen later first must not postpone it (the limits depend on order).
        queued = self._pending_ts.get(pair)
        if queued is None or ts < queued:
            self._pending_ts[pair] = ts
            heapq.heappush(self.pending, (ts, *pair))

    def _drop_stale(self) -> None:
        while self.pending and self._pending_ts.get(self.pending[0][1:]) != self.pending[0][0]:
            heapq.heappop(self.pending)

    def next_link_ts(self) -> int | None:
        self._drop_stale()
        return self.pending[0][0] if self.pending else None

    def apply_next(self) -> Merge | Refusal | None:
        self._drop_stale()
        ts, a, b = heapq.heappop(self.pending)
        del self._pending_ts[(a, b)]
        pa, pb = self.owner[a], self.owner[b]
        if pa == pb:
            return None
        left, right = self.persons[pa], self.persons[pb]
        together = _counts(left, right)
        for kind, limit in self.limits.items():
            if together.get(kind, 0) > limit:
                return Refusal(ts, a, b, f"{kind} limit {limit}")
        if self._order(right.best) < self._order(left.best):
            pa, pb, left, right = pb, pa, right, left
        # `pa` survives: it holds the best identifier, so its person_id is the merged one's.
        for key, seen in right.members.items():
            left.members[key] = seen
            self.owner[key] = pa
            self.changed.add(key)
        del self.persons[pb]
        self.dirty.update((pa, pb))
        return Merge(ts, pb, pa)

    def drain(self) -> tuple[set[str], set[str]]:
        changed, dirty = self.changed, self.dirty
        self.changed, self.dirty = set(), set()
        return changed, dirty

    # Persistence: a person record holds everything; the index is rebuilt from it.
    def record(self, pid: str) -> dict | None:
        person = self.persons.get(pid)
        return None if person is None else {"b": person.best, "m": person.members}

    def load(self, pid: str, record: Mapping) -> None:
        self.persons[pid] = Person(record["b"], {k: list(v) for k, v in record["m"].items()})
        for key in record["m"]:
            self.owner[key] = pid

    def forget(self, pid: str) -> None:
        person = self.persons.pop(pid, None)
        for key in person.members if person else ():
            if self.owner.get(key) == pid:
                del self.owner[key]

    def drop_links(self, keys: set[str]) -> None:
        """Forget queued links touching any of `keys`."""
        kept = {
            pair: ts
            for pair, ts in self._pending_ts.items()
            if pair[0] not in keys and pair[1] not in keys
        }
        if len(kept) != len(self._pending_ts):
            self.load_pending([ts, a, b] for (a, b), ts in kept.items())

    def pending_state(self) -> list[list]:
        return [[ts, a, b] for (a, b), ts in sorted(self._pending_ts.items())]

    def load_pending(self, items: Iterable[list]) -> None:
        self.pending = [(int(ts), a, b) for ts, a, b in items]
        heapq.heapify(self.pending)
        self._pending_ts = {(a, b): ts for ts, a, b in self.pending}
