"""Events (as on the raw topic) for identity and session tests and the streams benchmark.

Unlike `traffic.py`, which sends beacons through the collector, this yields accepted events
directly, with what stitching needs to be exercised: several devices per person, logins that
come late in a visit on a second device, e-mail clicks carrying a hashed e-mail, app
advertising ids, a shared kiosk device many people log in on (per-type limits), junk user
ids, and arrival shuffled within a bound.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from typing import Any

MINUTE = 60_000
# Page and product categories, for the signals stage's interests. Derived from the event id,
# not drawn from the generator, so adding them left the traffic itself unchanged.
CATEGORIES = ("shoes", "bags", "outdoor", "books", "kitchen")
ENGAGING = frozenset({"page_view", "screen_view", "email_click", "purchase"})


def _event(
    eid: str, ts: int, device: tuple[str, str, str], etype: str, **fields: Any
) -> dict[str, Any]:
    device_id, kind, device_type = device
    return {
        "event_id": eid,
        "event_type": etype,
        "site_id": "shop",
        "device_id": device_id,
        "device_kind": kind,
        "ts_ms": ts,
        "received_ms": ts,
        "url": fields.pop("url", f"https://shop.example/{etype}"),
        "device_type": device_type,
        "channel": fields.pop("channel", "direct"),
        "utm_source": fields.pop("utm_source", ""),
        **fields,
    }


def generate(persons: int, seed: int = 11, start_ms: int = 1_764_000_000_000) -> list[dict]:
    """Events of `persons` people (plus a kiosk), sorted by event time."""
    rng = random.Random(seed)  # noqa: S311 - reproducible traffic
    events: list[dict] = []
    kiosk = ("kiosk-1", "cookie", "desktop")
    for p in range(persons):
        kinds = rng.sample([("cookie", "desktop"), ("cookie", "mobile"), ("app", "mobile")],
                           rng.choice([1, 2, 2, 3]))  # fmt: skip
        devices = [(f"p{p}-d{i}" if k == "cookie" else f"app-p{p}-{i}", k, t)
                   for i, (k, t) in enumerate(kinds)]  # fmt: skip
        logged = {d[0]: False for d in devices}
        adid = f"adid-{p}" if rng.random() < 0.5 else ""
        email = hashlib.sha256(f"person{p}@example.com".encode()).hexdigest()
        t = start_ms + rng.randrange(0, 2 * 24 * 60 * MINUTE)
        device = rng.choice(devices)
        for n in range(rng.randrange(3, 25)):
            pause = rng.random()
            t += rng.randrange(5_000, 5 * MINUTE) if pause < 0.8 else rng.randrange(
                31 * MINUTE, 2 * 24 * 60 * MINUTE)  # fmt: skip
            if rng.random() < 0.3:
                device = rng.choice(devices)  # a device switch, often within a visit
            fields: dict[str, Any] = {}
            roll = rng.random()
            etype = "screen_view" if device[1] == "app" else "page_view"
            if roll < 0.08 and device[1] == "cookie":
                etype, fields = "email_click", {"email_hash": email, "channel": "email",
                                                "utm_source": "newsletter"}  # fmt: skip
            elif roll < 0.2:
                etype, logged[device[0]] = "login", True
            elif roll < 0.25:
                etype, fields = "purchase", {"revenue": round(rng.uniform(10, 300), 2)}
            elif roll < 0.27:
                fields = {"user_id": rng.choice(["undefined", "null", "0", " "])}  # junk
            if logged[device[0]]:
                fields.setdefault("user_id", f"user-{p}")
            if device[1] == "app" and adid:
                fields["advertising_id"] = adid
            if etype in ENGAGING:
                fields["category"] = CATEGORIES[zlib.crc32(f"e{p}-{n}".encode()) % 5]
            events.append(_event(f"e{p}-{n}", t, device, etype, **fields))
        if p % 7 == 0:  # logs in on the shop's kiosk: a shared device
            t += rng.randrange(MINUTE, 60 * MINUTE)
            events.append(_event(f"k{p}", t, kiosk, "login", user_id=f"user-{p}"))
    events.sort(key=lambda e: (e["ts_ms"], e["event_id"]))
    return events


def shuffled(events: list[dict], max_delay_ms: int, seed: int = 3) -> list[dict]:
    """Arrival order: each event delayed by up to `max_delay_ms` of event time."""
    rng = random.Random(seed)  # noqa: S311
    return sorted(events, key=lambda e: e["ts_ms"] + rng.randrange(max_delay_ms + 1))


def partition_for(device_id: str, partitions: int) -> int:
    """A stable stand-in for Kafka's partitioner, for tests without a broker."""
    return zlib.crc32(device_id.encode()) % partitions


def closing_events(events: list[dict], partitions: int, horizon_ms: int) -> list[dict]:
    """One event per partition `horizon_ms` after the last: moves every watermark past the
    input so all links are applied and all sessions closed. Produce event i to partition i."""
    end = max(e["ts_ms"] for e in events) + horizon_ms
    return [
        _event(f"close-{p}", end, (f"closer-{p}", "cookie", "desktop"), "page_view")
        for p in range(partitions)
    ]
