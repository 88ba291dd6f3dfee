"""Warehouse rows and signal records from a profile: pure, so the stage's output is testable.

Every row is a snapshot of state with the profile's revision as its `version`: rows written
again after a redelivery carry the same version and collapse in the ReplacingMergeTree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from streams.audiences import Change
from streams.profiles import Moment, Profile, SignalsConfig, consents
from streams.summaries import best_hour, contacts, rfm, shares, top_interests

MAX_RECENT = 20  # exits and moments kept in the profile, re-written after a redelivery


def _s(ms: int) -> int:
    return max(0, int(ms) // 1000)


def identifiers(p: Profile) -> dict[str, list[str]]:
    ids = p["ids"]
    return {
        "cookie_ids": list(ids.get("cookie", [])),
        "app_ids": list(ids.get("app", [])),
        "email_hashes": list(ids.get("email", [])),
        "advertising_ids": list(ids.get("adid", [])),
    }


def profile_row(p: Profile, cfg: SignalsConfig, merged_into: str = "") -> dict[str, Any]:
    now = p["now_ms"]
    r, f, m = rfm(p, now)
    channels, devices = shares(p["ch"]), shares(p["dev"])
    hour = best_hour(p)
    return {
        "person_id": p["pid"],
        "version": p["rev"],
        "merged_into": merged_into,
        "updated_at": _s(now),
        "first_seen": _s(p["first_ms"]),
        "last_seen": _s(p["last_ms"]),
        **identifiers(p),
        "user_ids": list(p["ids"].get("user", [])),
        "lifecycle": p["stage"],
        "purchases": p["buys"],
        "revenue": round(p["revenue"], 6),
        "last_purchase": _s(p["last_buy_ms"]),
        "rfm_r": r,
        "rfm_f": f,
        "rfm_m": m,
        "channels": list(channels),
        "channel_shares": list(channels.values()),
        "device_types": list(devices),
        "device_shares": list(devices.values()),
        "email_actions": sorted(p["em"]),
        "email_action_counts": [int(p["em"][k]) for k in sorted(p["em"])],
        "best_hour": -1 if hour is None else hour,
        "timezone": p["tz"],
        "contacts_7d": contacts(p, now, 7, cfg),
        "consent": list(p["consent"]["granted"]) if p["consent"] else [],
        "audience_eligible": int(consents(p, cfg)),
        "audiences": sorted(p["aud"]),
    }


def interest_rows(p: Profile, cfg: SignalsConfig) -> list[dict[str, Any]]:
    """The current top interests, scored at `as_of`; older rows of a person are the ones whose
    version is below the profile's."""
    return [
        {
            "person_id": p["pid"],
            "category": category,
            "score": score,
            "as_of": _s(p["int_at"]),
            "version": p["rev"],
        }
        for category, score in top_interests(p, p["int_at"], cfg, cfg.top_n)
    ]


def membership_row(p: Profile, audience: str, entered_ms: int, exited_ms: int) -> dict[str, Any]:
    return {
        "audience": audience,
        "person_id": p["pid"],
        **identifiers(p),
        "entered_at": _s(entered_ms),
        "exited_at": _s(exited_ms),
        "version": p["rev"],
    }


def moment_row(m: Moment) -> dict[str, Any]:
    return {
        "person_id": m.person_id,
        "stage": m.stage,
        "previous": m.previous,
        "at": _s(m.at_ms),
        "at_ms": m.at_ms,
    }


@dataclass
class Output:
    """What one message produced: warehouse rows per table, and signal records."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    signals: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: Output) -> None:
        for table, rows in other.rows.items():
            self.rows[table].extend(rows)
        self.signals.extend(other.signals)


def remember(p: Profile, changes: list[Change], moments: list[Moment]) -> None:
    """Keep the latest exits and moments in the profile, to write them again if the message
    that produced them is redelivered after a crash (their rows might not have been written)."""
    exits = [[c.audience, c.entered_at_ms, c.at_ms] for c in changes if not c.entered]
    p["exits"] = (p.get("exits", []) + exits)[-MAX_RECENT:]
    recent = [[m.previous, m.stage, m.at_ms] for m in moments]
    p["moments"] = (p.get("moments", []) + recent)[-MAX_RECENT:]


def snapshot(
    p: Profile,
    cfg: SignalsConfig,
    changes: list[Change],
    moments: list[Moment],
    *,
    replay: bool = False,
    merged_into: str = "",
) -> Output:
    """Rows for the person's state after a message. `replay`: the message changed nothing (a
    redelivery), so the recent exits and moments are written again too."""
    out = Output()
    out.rows["profiles"].append(profile_row(p, cfg, merged_into))
    if not merged_into:
        out.rows["interests"].extend(interest_rows(p, cfg))
    for name, entered in sorted(p["aud"].items()):
        out.rows["audience_members"].append(membership_row(p, name, entered, 0))
    if replay:
        exits = [(a, entered, exited) for a, entered, exited in p.get("exits", [])]
        moments = [Moment(p["pid"], prev, stage, at) for prev, stage, at in p.get("moments", [])]
    else:
        exits = [(c.audience, c.entered_at_ms, c.at_ms) for c in changes if not c.entered]
    for name, entered, exited in exits:
        out.rows["audience_members"].append(membership_row(p, name, entered, exited))
    out.rows["lifecycle_moments"].extend(moment_row(m) for m in moments)
    if not replay:
        out.signals.extend(signals_of(p, changes, moments))
    return out


def signals_of(p: Profile, changes: list[Change], moments: list[Moment]) -> list[dict[str, Any]]:
    """The records for the signals topic: audience enters/exits and lifecycle moments."""
    ids = identifiers(p) if changes else {}
    signals = [
        {
            "kind": "audience_enter" if c.entered else "audience_exit",
            "person_id": p["pid"],
            "at_ms": c.at_ms,
            "audience": c.audience,
            "identifiers": ids,
        }
        for c in changes
    ]
    signals += [
        {
            "kind": "lifecycle",
            "person_id": p["pid"],
            "at_ms": m.at_ms,
            "stage": m.stage,
            "previous": m.previous,
        }
        for m in moments
    ]
    return signals
