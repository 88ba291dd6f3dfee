"""What a rule may name: the variables and functions of the audience rule language.

Each reads a profile through `streams.summaries`; nothing else is reachable from a rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams import summaries as s
from streams.profiles import Profile, SignalsConfig, consents, stage_of

Value = float | str | bool

# Functions: name -> (parameters {name: (type, default or REQUIRED)}, result type, impl).
REQUIRED = object()
Impl = Callable[[Profile, int, SignalsConfig, dict[str, Any]], Value]


def _days(cfg: SignalsConfig, a: dict[str, Any]) -> int:
    return int(a["days"])  # checked against the window when the rule was compiled


FUNCTIONS: dict[str, tuple[dict[str, tuple[type, Any]], type, Impl]] = {
    "count": (
        {"type": (str, ""), "category": (str, ""), "days": (float, REQUIRED)},
        float,
        lambda p, now, cfg, a: s.count_in_window(p, now, _days(cfg, a), a["type"], a["category"]),
    ),
    "interest": (
        {"category": (str, REQUIRED)},
        float,
        lambda p, now, cfg, a: s.interests_at(p, now, cfg).get(a["category"], 0.0),
    ),
    "top_interest": (
        {"category": (str, REQUIRED), "n": (float, 3.0)},
        bool,
        lambda p, now, cfg, a: a["category"] in dict(s.top_interests(p, now, cfg, int(a["n"]))),
    ),
    "channel_share": (
        {"channel": (str, REQUIRED)},
        float,
        lambda p, now, cfg, a: s.shares(p["ch"]).get(a["channel"], 0.0),
    ),
    "device_share": (
        {"device": (str, REQUIRED)},
        float,
        lambda p, now, cfg, a: s.shares(p["dev"]).get(a["device"], 0.0),
    ),
    "contacts": (
        {"days": (float, REQUIRED)},
        float,
        lambda p, now, cfg, a: s.contacts(p, now, _days(cfg, a), cfg),
    ),
    "consent": (
        {"category": (str, REQUIRED)},
        bool,
        lambda p, now, cfg, a: (
            consents(p, cfg)
            and p["consent"] is not None
            and a["category"] in p["consent"]["granted"]
        ),
    ),
    "has": (
        {"kind": (str, REQUIRED)},
        bool,
        lambda p, now, cfg, a: bool(p["ids"].get(a["kind"])),
    ),
}

VARIABLES: dict[str, tuple[type, Callable[[Profile, int, SignalsConfig], Value]]] = {
    "lifecycle": (str, lambda p, now, cfg: stage_of(p, now, cfg)),
    "purchases": (float, lambda p, now, cfg: float(p["buys"])),
    "revenue": (float, lambda p, now, cfg: float(p["revenue"])),
    "recency_days": (float, lambda p, now, cfg: float(s.recency_days(p, now))),
    "rfm_r": (float, lambda p, now, cfg: float(s.rfm(p, now)[0])),
    "rfm_f": (float, lambda p, now, cfg: float(s.rfm(p, now)[1])),
    "rfm_m": (float, lambda p, now, cfg: float(s.rfm(p, now)[2])),
    "days_since_seen": (float, lambda p, now, cfg: float(max(0, now - p["last_ms"]) // 86_400_000)),
    "identified": (bool, lambda p, now, cfg: bool(p["ids"].get("user") or p["ids"].get("email"))),
}
