"""What one attributed message does to one person's state: pure, no Kafka, no faust.

The faust stage (streams/signals.py) reads the person's stored state, calls one of these and
stores the result: one table write per message, whatever the number of events in it.

A merged-away person leaves a tombstone under its key — its last state plus `into`, the
survivor: messages still on their way to it (an absorb forwarded by an earlier merge from
another partition, a batch re-sent after a crash) follow it to the survivor instead of
starting a new, orphaned profile; a merge redelivered after a crash (its rows may not have
been written) writes the loser's last rows and hands it over again (the survivor absorbs a
person once). Its `ids` let an erasure find it like any profile.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from schemas.signals import Absorb, AttributedBatch, Merge, batch_message, merge_message
from streams.audiences import Audience, leave_all, reconcile
from streams.profiles import Profile, SignalsConfig, apply_events, combine, new_profile
from streams.signal_rows import Output, remember, signals_of, snapshot


@dataclass
class Update:
    """The outcome of a message: the state to store (None: delete the key; unchanged: skip),
    warehouse rows and signals, messages to send (key, value) and identifiers to index."""

    state: Profile | None
    changed: bool
    output: Output = field(default_factory=Output)
    forward: list[tuple[str, bytes]] = field(default_factory=list)
    new_identifiers: list[str] = field(default_factory=list)
    applied: int = 0  # events not seen before


def load(raw: bytes | None) -> Profile | None:
    return orjson.loads(raw) if raw else None


def is_tombstone(p: Profile | None) -> bool:
    return p is not None and "into" in p


def tombstone(loser: str, survivor: str, p: Profile | None) -> Profile:
    return {"pid": loser, "into": survivor, "ids": {}} if p is None else {**p, "into": survivor}


def _hand_over(p: Profile, survivor: str, cfg: SignalsConfig, out: Output) -> Update:
    absorb = orjson.dumps({"absorb": {"from": p["pid"], "into": survivor, "profile": p}})
    out.extend(snapshot(p, cfg, [], [], replay=True, merged_into=survivor))
    return Update(tombstone(p["pid"], survivor, p), True, out, forward=[(survivor, absorb)])


def _id_keys(p: Profile) -> set[str]:
    return {f"{kind}:{v}" for kind, values in p["ids"].items() for v in values}


def on_batch(
    raw: bytes | None, batch: AttributedBatch, cfg: SignalsConfig, audiences: list[Audience]
) -> Update:
    p = load(raw) or new_profile(batch.person_id)
    if is_tombstone(p):  # merged away meanwhile: the survivor takes the events (once)
        events = [e.model_dump() for e in batch.events]
        return Update(p, False, forward=[(p["into"], batch_message(p["into"], events))])
    known = _id_keys(p)
    applied, moments = apply_events(p, [e.model_dump() for e in batch.events], cfg)
    if not applied:  # a redelivery: write the same rows again, change nothing
        # The identifier index too: the first delivery's updates went out with its offset
        # commit, which a crash can have prevented (they are upserts, so harmless twice).
        ids = sorted(known)
        return Update(p, False, snapshot(p, cfg, [], [], replay=True), new_identifiers=ids)
    changes = reconcile(p, p["now_ms"], audiences, cfg)
    p["rev"] += 1
    remember(p, changes, moments)
    new_ids = sorted(_id_keys(p) - known)
    out = snapshot(p, cfg, changes, moments)
    return Update(p, True, out, new_identifiers=new_ids, applied=applied)


def on_merge(key: str, raw: bytes | None, merge: Merge, cfg: SignalsConfig) -> Update:
    """On the loser's partition: hand its state to the survivor and leave a tombstone.

    A merge keyed by the survivor is re-keyed by the loser first. A loser already merged
    (a redelivery) changes nothing; one without state yet still gets its tombstone.
    """
    loser, survivor = merge.from_, merge.into
    if key != loser:
        return Update(None, False, forward=[(loser, merge_message(loser, survivor))])
    p = load(raw)
    if loser == survivor:
        return Update(p, False)
    if p is None:
        return Update(tombstone(loser, survivor, None), True)
    if is_tombstone(p):  # redelivered: the same rows and hand-over again, nothing changes
        if "rev" not in p:  # merged before it had any state: nothing to write
            return Update(p, False)
        last = {k: v for k, v in p.items() if k != "into"}
        update = _hand_over(last, p["into"], cfg, Output())
        return Update(p, False, update.output, forward=update.forward)
    changes = leave_all(p, p["now_ms"])
    p["rev"] += 1
    remember(p, changes, [])  # the exits are written again if this merge is redelivered
    out = Output()
    out.signals.extend(signals_of(p, changes, []))
    return _hand_over(p, survivor, cfg, out)


def on_absorb(
    raw: bytes | None, absorb: Absorb, cfg: SignalsConfig, audiences: list[Audience]
) -> Update:
    """On the survivor's partition: combine the loser's state, once (or pass it on, when
    the survivor has itself been merged away since)."""
    s = load(raw) or new_profile(absorb.into)
    if is_tombstone(s):
        value = {"absorb": {"from": absorb.from_, "into": s["into"], "profile": absorb.profile}}
        return Update(s, False, forward=[(s["into"], orjson.dumps(value))])
    known = _id_keys(s)
    done, moments = combine(s, absorb.profile, cfg)
    if not done:  # redelivered: rows and identifier index again, as for a batch
        return Update(
            s, False, snapshot(s, cfg, [], [], replay=True), new_identifiers=sorted(known)
        )
    changes = reconcile(s, s["now_ms"], audiences, cfg)
    s["rev"] += 1
    remember(s, changes, moments)
    new_ids = sorted(_id_keys(s) - known)
    return Update(s, True, snapshot(s, cfg, changes, moments), new_identifiers=new_ids)


def load_url_categories(path: Path | None) -> tuple[tuple[str, str], ...]:
    """`[[url]] pattern = "shop.example/shoes/*"  category = "shoes"`, first match wins."""
    if path is None or str(path) == "":
        return ()
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: cannot read URL categories: {exc}") from exc
    rules = []
    for i, entry in enumerate(data.get("url", []), 1):
        if not isinstance(entry, dict) or set(entry) != {"pattern", "category"}:
            raise ValueError(f"{path}: [[url]] #{i} needs exactly pattern and category")
        if not all(isinstance(entry[k], str) and 0 < len(entry[k]) <= 256 for k in entry):
            raise ValueError(f"{path}: [[url]] #{i}: pattern and category are short strings")
        rules.append((entry["pattern"], entry["category"]))
    return tuple(rules)
