"""A person's profile: pure functions over a plain, JSON-serialisable dict.

The dict is what the faust table stores (one record per person, written once per message),
so everything here is plain data and every function is deterministic given its inputs: a
replay rebuilds the same profiles. Time is always event time (`ts_ms`), never the clock.

Interest score of category c at time t (half-life H, weight w_i of event i's type):

    score_c(t) = Σ_i w_i · 2^(-(t - t_i) / H)      over the person's events i in c, t_i ≤ t

kept incrementally as (score at `int_at`, `int_at`): moving the reference forward multiplies
by 2^(-Δ/H); an older (out-of-order) event adds w · 2^(-(int_at - t_i)/H). Both are exact.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.signals import INTEREST_WEIGHTS

DAY_MS = 86_400_000
Profile = dict[str, Any]

# Event fields that identify a person to a retargeting system, by identifier kind.
IDENTIFIER_KINDS = ("cookie", "app", "email", "adid", "user")
MAX_IDS_PER_KIND = 20
MAX_MERGED = 1000


@dataclass(frozen=True)
class SignalsConfig:
    half_life_days: float = 14.0
    weights: Mapping[str, float] = field(default_factory=lambda: dict(INTEREST_WEIGHTS))
    top_n: int = 10
    window_days: int = 30  # daily counts kept: the longest window a rule may ask for
    dedup_ids: int = 1000  # event ids remembered per person for de-duplication
    repeat_purchases: int = 2
    lapsed_days: int = 90
    purchase_events: frozenset[str] = frozenset({"purchase"})
    contact_events: frozenset[str] = frozenset({"email_sent", "ad_shown"})
    optout_events: frozenset[str] = frozenset({"opt_out", "unsubscribe", "consent_withdrawn"})
    required_consent: str = "marketing"  # "" = no explicit grant needed (opt-outs still apply)
    url_categories: tuple[tuple[str, str], ...] = ()  # (glob on host/path, category)

    @property
    def half_life_ms(self) -> float:
        return self.half_life_days * DAY_MS


def new_profile(person_id: str) -> Profile:
    return {
        "pid": person_id,
        "rev": 0,
        "first_ms": 0,
        "last_ms": 0,  # last engagement (what "last seen" means)
        "now_ms": 0,  # newest event of any kind: the profile's clock
        "ids": {},
        "seen": {},
        "int": {},
        "int_at": 0,
        "days": {},
        "ch": {},
        "em": {},
        "dev": {},
        "hours": [0] * 24,
        "tz": "",
        "tz_ms": 0,
        "buys": 0,
        "revenue": 0.0,
        "first_buy_ms": 0,
        "last_buy_ms": 0,
        "consent": None,  # latest statement: {"at": ms, "granted": [...]}
        "stage": "anonymous",
        "aud": {},  # audience -> entered_at (ms)
        "merged": [],  # persons already absorbed: a redelivered merge is a no-op
    }


def category_of(event: Mapping[str, Any], cfg: SignalsConfig) -> str:
    if event.get("category"):
        return str(event["category"])
    url = str(event.get("url") or "")
    if url and cfg.url_categories:
        target = re.sub(r"^[a-z]+://", "", url.split("?", 1)[0].split("#", 1)[0])
        for pattern, category in cfg.url_categories:
            if fnmatch.fnmatchcase(target, pattern):
                return category
    return ""


def identifiers_of(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    found = []
    if event.get("device_id"):
        found.append(("app" if event.get("device_kind") == "app" else "cookie", event["device_id"]))
    for kind, name in (("email", "email_hash"), ("adid", "advertising_id"), ("user", "user_id")):
        if event.get(name):
            found.append((kind, str(event[name])))
    return found


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_hour(ts_ms: int, tz: str) -> int:
    zone = _zone(tz)
    if zone is None:
        return (ts_ms // 3_600_000) % 24
    from datetime import datetime

    return datetime.fromtimestamp(ts_ms / 1000, zone).hour


def decay(score: float, from_ms: int, to_ms: int, cfg: SignalsConfig) -> float:
    return score * 2.0 ** (-(to_ms - from_ms) / cfg.half_life_ms)


def _bump(counter: dict[str, Any], key: str, by: float = 1) -> None:
    counter[key] = counter.get(key, 0) + by


def _add_interest(p: Profile, category: str, weight: float, ts: int, cfg: SignalsConfig) -> None:
    if ts > p["int_at"]:
        p["int"] = {c: decay(s, p["int_at"], ts, cfg) for c, s in p["int"].items()}
        p["int_at"] = ts
    _bump(p["int"], category, weight * 2.0 ** (-(p["int_at"] - ts) / cfg.half_life_ms))


def _apply(p: Profile, e: Mapping[str, Any], cfg: SignalsConfig) -> None:
    ts, kind = int(e["ts_ms"]), str(e["event_type"])
    p["now_ms"] = max(p["now_ms"], ts)
    for id_kind, value in identifiers_of(e):
        known = p["ids"].setdefault(id_kind, [])
        if value not in known:
            known.append(value)
            del known[:-MAX_IDS_PER_KIND]
    if e.get("consent") or kind in cfg.optout_events:
        granted = [] if kind in cfg.optout_events else list(e["consent"])
        if p["consent"] is None or ts >= p["consent"]["at"]:
            p["consent"] = {"at": ts, "granted": granted}
    category = category_of(e, cfg)
    day = _bucket(p, ts)
    _bump(day, f"t:{kind}")
    if category:
        _bump(day, f"c:{kind}:{category}")
    if kind in cfg.contact_events or kind in cfg.optout_events:
        return  # a contact is something done to the person, not engagement
    p["first_ms"] = min(p["first_ms"], ts) if p["first_ms"] else ts
    p["last_ms"] = max(p["last_ms"], ts)
    if e.get("timezone") and ts >= p["tz_ms"]:
        p["tz"], p["tz_ms"] = str(e["timezone"]), ts
    if e.get("channel"):
        _bump(p["ch"], str(e["channel"]))
    if e.get("device_type"):
        _bump(p["dev"], str(e["device_type"]))
        if kind.startswith("email_"):
            _bump(p["em"], f"{kind}|{e['device_type']}")
    p["hours"][local_hour(ts, str(e.get("timezone") or p["tz"]))] += 1
    weight = cfg.weights.get(kind, 0.0)
    if category and weight > 0:
        _add_interest(p, category, weight, ts, cfg)
    if kind in cfg.purchase_events:
        p["buys"] += 1
        p["revenue"] += float(e.get("revenue") or 0.0)
        p["first_buy_ms"] = min(p["first_buy_ms"], ts) if p["first_buy_ms"] else ts
        p["last_buy_ms"] = max(p["last_buy_ms"], ts)


def _bucket(p: Profile, ts: int) -> dict[str, int]:
    return p["days"].setdefault(str(ts // DAY_MS), {})


def stage_of(p: Profile, now_ms: int, cfg: SignalsConfig) -> str:
    if p["buys"] == 0:
        return "identified" if p["ids"].get("user") or p["ids"].get("email") else "anonymous"
    if now_ms - p["last_buy_ms"] > cfg.lapsed_days * DAY_MS:
        return "lapsed"
    return "repeat_buyer" if p["buys"] >= cfg.repeat_purchases else "first_purchase"


@dataclass
class Moment:
    """A lifecycle transition: the key moment a campaign triggers on."""

    person_id: str
    previous: str
    stage: str
    at_ms: int


def apply_events(
    p: Profile, events: Iterable[Mapping[str, Any]], cfg: SignalsConfig
) -> tuple[int, list[Moment]]:
    """Apply events not seen before, in event-time order; (events applied, moments)."""
    moments: list[Moment] = []
    applied = 0
    for e in sorted(events, key=lambda e: (int(e["ts_ms"]), str(e["event_id"]))):
        if e.get("is_bot") or str(e["event_id"]) in p["seen"]:
            continue
        p["seen"][str(e["event_id"])] = int(e["ts_ms"])
        _apply(p, e, cfg)
        applied += 1
        moments.extend(_transition(p, int(e["ts_ms"]), cfg))
    if applied:
        _prune(p, cfg)
    return applied, moments


def _transition(p: Profile, at_ms: int, cfg: SignalsConfig) -> list[Moment]:
    stage = stage_of(p, max(at_ms, p["now_ms"]), cfg)
    if stage == p["stage"]:
        return []
    moment = Moment(p["pid"], p["stage"], stage, at_ms)
    p["stage"] = stage
    return [moment]


def _prune(p: Profile, cfg: SignalsConfig) -> None:
    """Keep state bounded: the window's days, the top N interests, the newest event ids."""
    oldest = p["now_ms"] // DAY_MS - cfg.window_days
    p["days"] = {d: c for d, c in p["days"].items() if int(d) > oldest}
    if len(p["int"]) > cfg.top_n:
        top = sorted(p["int"].items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.top_n]
        p["int"] = dict(top)
    if len(p["seen"]) > cfg.dedup_ids:
        newest = sorted(p["seen"].items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.dedup_ids]
        p["seen"] = dict(newest)


def combine(survivor: Profile, loser: Profile, cfg: SignalsConfig) -> tuple[bool, list[Moment]]:
    """Absorb `loser` into `survivor` once; False when it was already absorbed."""
    s, lo = survivor, loser
    if lo["pid"] in s["merged"] or lo["pid"] == s["pid"]:
        return False, []
    for kind, values in lo["ids"].items():
        known = s["ids"].setdefault(kind, [])
        known.extend(v for v in values if v not in known)
        del known[:-MAX_IDS_PER_KIND]
    s["seen"].update(lo["seen"])
    at = max(s["int_at"], lo["int_at"])
    interests = {c: decay(v, s["int_at"], at, cfg) for c, v in s["int"].items()}
    for c, v in lo["int"].items():
        _bump(interests, c, decay(v, lo["int_at"], at, cfg))
    s["int"], s["int_at"] = interests, at
    for day, counts in lo["days"].items():
        bucket = s["days"].setdefault(day, {})
        for key, n in counts.items():
            _bump(bucket, key, n)
    for name in ("ch", "em", "dev"):
        for key, n in lo[name].items():
            _bump(s[name], key, n)
    s["hours"] = [a + b for a, b in zip(s["hours"], lo["hours"], strict=True)]
    if lo["tz_ms"] > s["tz_ms"]:
        s["tz"], s["tz_ms"] = lo["tz"], lo["tz_ms"]
    s["buys"] += lo["buys"]
    s["revenue"] += lo["revenue"]
    for name, pick in (("first_ms", min), ("first_buy_ms", min)):
        s[name] = pick(x for x in (s[name], lo[name]) if x) if s[name] or lo[name] else 0
    for name in ("last_ms", "now_ms", "last_buy_ms"):
        s[name] = max(s[name], lo[name])
    if lo["consent"] and (s["consent"] is None or lo["consent"]["at"] > s["consent"]["at"]):
        s["consent"] = lo["consent"]
    s["merged"] = (s["merged"] + [lo["pid"]] + lo["merged"])[-MAX_MERGED:]
    s["rev"] = max(s["rev"], lo["rev"])
    _prune(s, cfg)
    return True, _transition(s, s["now_ms"], cfg)


def consents(p: Profile, cfg: SignalsConfig) -> bool:
    """May this person be in an audience? Never after an opt-out or a withdrawn consent."""
    statement = p["consent"]
    if statement is not None and not statement["granted"]:
        return False  # the latest statement grants nothing: an opt-out
    if not cfg.required_consent:
        return True
    return statement is not None and cfg.required_consent in statement["granted"]
