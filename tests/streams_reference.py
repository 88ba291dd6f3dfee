"""The offline reference: union-find + sort by time + split on gaps, over all events at once.

Deliberately naive and independent of streams/engine.py (it shares only the junk list and
the uuid namespace): events are walked in event-time order; at each instant, sessions whose
gap has elapsed close first, then the instant's events join their device's person, then the
instant's links merge persons (pair order, per-type limits checked on the union). A merge
joins both persons' open sessions; closed sessions keep the person they closed with.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from typing import Any

from streams.identity import NAMESPACE, is_junk
from streams.profiles import SignalsConfig, apply_events, new_profile
from streams.signal_rows import interest_rows

RANK = {"user": 0, "email": 1, "app": 2, "adid": 3, "cookie": 4}


def keys_of(e: dict[str, Any]) -> list[str]:
    kind = "app" if e["device_kind"] == "app" else "cookie"
    pairs = [(kind, e["device_id"]), ("user", e.get("user_id", "")),
             ("email", e.get("email_hash", "")), ("adid", e.get("advertising_id", ""))]  # fmt: skip
    return [f"{k}:{v}" for k, v in pairs if v and not is_junk(v)]


def pid_of(members: set[str]) -> str:
    best = min(members, key=lambda k: (RANK[k.split(":")[0]], k))
    return str(uuid.uuid5(NAMESPACE, best))


def sid_of(events: list[dict]) -> str:
    return str(uuid.uuid5(NAMESPACE, "session:" + events[0]["event_id"]))


def _describe(events: list[dict], owner: str) -> tuple:
    path = [d for d, _ in itertools.groupby(e["device_id"] for e in events)]
    return (sid_of(events), owner, events[0]["ts_ms"], events[-1]["ts_ms"], len(events),
            tuple(sorted({e["device_id"] for e in events})), tuple(path),
            round(sum(e.get("revenue", 0.0) for e in events), 2))  # fmt: skip


def reference(
    events: list[dict], gap: int, limits: dict[str, int]
) -> tuple[dict[str, tuple], set[tuple], set[tuple]]:
    """(identifier → (person_id, first, last), person sessions, device sessions)."""
    parent: dict[str, str] = {}
    members: dict[str, set[str]] = {}
    seen: dict[str, list[int]] = {}
    open_: dict[str, list[dict]] = {}
    sessions: set[tuple] = set()

    def find(k: str) -> str:
        while parent[k] != k:
            k = parent[k]
        return k

    def close_if_over(root: str, now: int) -> None:
        s = open_.get(root)
        if s and now - s[-1]["ts_ms"] >= gap:
            sessions.add(_describe(s, pid_of(members[root])))
            del open_[root]

    ordered = sorted(events, key=lambda e: (e["ts_ms"], e["event_id"]))
    for ts, group in itertools.groupby(ordered, key=lambda e: e["ts_ms"]):
        group = list(group)
        links = set()
        for e in group:
            keys = keys_of(e)
            for k in keys:
                if k not in parent:
                    parent[k], members[k], seen[k] = k, {k}, [ts, ts]
                seen[k][1] = ts
            root = find(keys[0])
            close_if_over(root, ts)
            open_.setdefault(root, []).append(e)
            links |= {tuple(sorted((keys[0], o))) for o in keys[1:]}
        for a, b in sorted(links):
            ra, rb = find(a), find(b)
            if ra == rb:
                continue
            union = members[ra] | members[rb]
            if any(sum(k.startswith(t + ":") for k in union) > n for t, n in limits.items()):
                continue
            close_if_over(ra, ts)
            close_if_over(rb, ts)
            parent[rb], members[ra] = ra, union
            joined = sorted(open_.pop(ra, []) + open_.pop(rb, []),
                            key=lambda e: (e["ts_ms"], e["event_id"]))  # fmt: skip
            if joined:
                open_[ra] = joined
    for root, s in open_.items():
        sessions.add(_describe(s, pid_of(members[root])))
    identities = {k: (pid_of(members[find(k)]), *seen[k]) for k in parent}
    by_device: dict[str, list[dict]] = defaultdict(list)
    for e in ordered:
        by_device[e["device_id"]].append(e)
    device_sessions: set[tuple] = set()
    for device, evs in by_device.items():
        current: list[dict] = []
        for e in evs:
            if current and e["ts_ms"] - current[-1]["ts_ms"] >= gap:
                device_sessions.add(_describe(current, device))
                current = []
            current.append(e)
        device_sessions.add(_describe(current, device))
    return identities, sessions, device_sessions


def from_rows(rows: list[dict[str, Any]], owner: str) -> set[tuple]:
    """Live session rows (latest version per id, not superseded) in the reference's shape."""
    latest: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["version"]):
        latest[row["session_id"]] = row
    return {
        (r["session_id"], r[owner], r["started_ms"], r["ended_ms"], r["events"],
         tuple(sorted(r["devices"])), tuple(r["device_path"]), round(r["revenue"], 2))
        for r in latest.values() if not r["superseded_by"]
    }  # fmt: skip


def reference_interests(
    events: list[dict], identities: dict[str, tuple], cfg: SignalsConfig
) -> dict[tuple[str, str], float]:
    """(person_id, category) → score: each final person's events applied at once, in time
    order, by the signals stage's own profile logic — what a run without any fault, merge
    or redelivery gives. Events without a usable identifier belong to nobody."""
    by_person: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        keys = keys_of(e)
        if keys:
            by_person[identities[keys[0]][0]].append(e)
    scores: dict[tuple[str, str], float] = {}
    for pid, evs in by_person.items():
        profile = new_profile(pid)
        apply_events(profile, evs, cfg)
        for row in interest_rows(profile, cfg):
            scores[(pid, row["category"])] = row["score"]
    return scores
