"""Read-side views of a profile: what rules, the read API and the warehouse rows see."""

from __future__ import annotations

from typing import Any

from streams.profiles import DAY_MS, Profile, SignalsConfig, decay, stage_of

# RFM boundaries (documented in docs/signals.md): a score is 1 + the number of boundaries
# the value passes; 0 means "no purchase yet".
RECENCY_DAYS = (180, 90, 60, 30)  # more recent → higher score
FREQUENCY = (2, 3, 5, 10)
MONETARY = (50.0, 150.0, 500.0, 1500.0)
NO_PURCHASE_DAYS = 36_500  # recency_days of a person who never bought


def interests_at(p: Profile, now_ms: int, cfg: SignalsConfig) -> dict[str, float]:
    at = max(now_ms, p["int_at"])
    return {c: decay(s, p["int_at"], at, cfg) for c, s in p["int"].items()}


def top_interests(p: Profile, now_ms: int, cfg: SignalsConfig, n: int) -> list[tuple[str, float]]:
    scores = interests_at(p, now_ms, cfg)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def count_in_window(
    p: Profile, now_ms: int, days: int, event_type: str = "", category: str = ""
) -> int:
    """Events of a type (any engaging type when empty) and category within the last `days`
    calendar days (UTC) up to `now_ms`'s day, that day included."""
    last = now_ms // DAY_MS
    first = last - days + 1
    total = 0
    for day, counts in p["days"].items():
        if not first <= int(day) <= last:
            continue
        if category and event_type:
            total += counts.get(f"c:{event_type}:{category}", 0)
        elif category:
            # keys are c:<type>:<category>; event types never contain ':'
            total += sum(
                n
                for k, n in counts.items()
                if k.startswith("c:") and k.split(":", 2)[2] == category
            )
        elif event_type:
            total += counts.get(f"t:{event_type}", 0)
        else:
            total += sum(n for k, n in counts.items() if k.startswith("t:"))
    return total


def contacts(p: Profile, now_ms: int, days: int, cfg: SignalsConfig) -> int:
    return sum(count_in_window(p, now_ms, days, kind) for kind in cfg.contact_events)


def shares(counter: dict[str, float]) -> dict[str, float]:
    total = sum(counter.values())
    return {k: round(v / total, 4) for k, v in sorted(counter.items())} if total else {}


def email_by_device(p: Profile) -> dict[str, dict[str, int]]:
    """{"email_open": {"mobile": 3}, "email_click": {"desktop": 1}}: who reads where."""
    out: dict[str, dict[str, int]] = {}
    for key, n in p["em"].items():
        kind, device = key.split("|", 1)
        out.setdefault(kind, {})[device] = n
    return out


def best_hour(p: Profile) -> int | None:
    hours = p["hours"]
    return None if not any(hours) else max(range(24), key=lambda h: (hours[h], -h))


def recency_days(p: Profile, now_ms: int) -> int:
    if not p["buys"]:
        return NO_PURCHASE_DAYS
    return max(0, (now_ms - p["last_buy_ms"]) // DAY_MS)


def rfm(p: Profile, now_ms: int) -> tuple[int, int, int]:
    if not p["buys"]:
        return 0, 0, 0
    days = recency_days(p, now_ms)
    r = 1 + sum(days <= b for b in RECENCY_DAYS)
    f = 1 + sum(p["buys"] >= b for b in FREQUENCY)
    m = 1 + sum(p["revenue"] >= b for b in MONETARY)
    return r, f, m


def summary(p: Profile, now_ms: int, cfg: SignalsConfig) -> dict[str, Any]:
    """The profile as the read API serves it."""
    r, f, m = rfm(p, now_ms)
    return {
        "person_id": p["pid"],
        "identifiers": p["ids"],
        "top_interests": [
            {"category": c, "score": round(s, 4)}
            for c, s in top_interests(p, now_ms, cfg, cfg.top_n)
        ],
        "channel_affinity": shares(p["ch"]),
        "device_affinity": shares(p["dev"]),
        "email_by_device": email_by_device(p),
        "best_contact_hour": best_hour(p),
        "timezone": p["tz"],
        "lifecycle": stage_of(p, now_ms, cfg),
        "value": {
            "purchases": p["buys"],
            "revenue": round(p["revenue"], 2),
            "recency_days": recency_days(p, now_ms) if p["buys"] else None,
            "rfm": {"r": r, "f": f, "m": m},
        },
        "contact_pressure_7d": contacts(p, now_ms, 7, cfg),
        "consent": p["consent"]["granted"] if p["consent"] else None,
        "audiences": sorted(p["aud"]),
        "first_seen_ms": p["first_ms"],
        "last_seen_ms": p["last_ms"],
    }
