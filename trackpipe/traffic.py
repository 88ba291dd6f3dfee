"""A built-in traffic generator: realistic beacons from people with several devices.

Each person browses anonymously on one or more devices (laptop and phone browsers, an app),
opens and clicks campaign e-mails, logs in at some point, adds to cart and sometimes buys.
Beacons are pixel query strings, sent over HTTP by `send_beacons` with a cookie jar per
device, exactly as browsers and apps would.
"""

from __future__ import annotations

import http.client
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

CATEGORIES = ["shoes", "jackets", "bags", "watches", "sport", "outdoor", "kids", "beauty"]
CAMPAIGNS = ["winter-sale", "new-arrivals", "loyalty"]
REFERRERS = ["https://www.google.com/", "https://www.facebook.com/", "", "https://news.example/"]
USER_AGENTS = {
    "desktop": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "phone": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "app": "ShopApp/5.2 (Android 15; Pixel 9)",
}


@dataclass(frozen=True)
class Beacon:
    device: str  # the device's key: one cookie jar per device, like a browser
    kind: str  # desktop | phone | app
    query: str


@dataclass
class Person:
    index: int
    devices: list[tuple[str, str]] = field(default_factory=list)  # (key, kind)

    @property
    def user_id(self) -> str:
        return f"user-{self.index:05d}"

    @property
    def email(self) -> str:
        return f"Person.{self.index}@Example.com "  # messy on purpose: the edge normalises it

    @property
    def consent(self) -> str:
        # Every fourth person declines marketing: never in an audience. By index, not by the
        # generator's rng, so the rest of the traffic is what it was without consent.
        return "analytics" if self.index % 4 == 3 else "analytics,marketing"


def generate(
    persons: int,
    seed: int = 7,
    site: str = "shop",
    start_ms: int = 1_764_000_000_000,
    malformed_every: int = 0,
) -> Iterator[Beacon]:
    """Yield beacons person by person in time order within each person's journey."""
    rng = random.Random(seed)  # noqa: S311 - reproducible traffic, not security
    count = 0
    for i in range(persons):
        person = Person(i)
        for d in range(rng.choice([1, 2, 2, 3])):
            kind = ["desktop", "phone", "app"][d] if d or rng.random() < 0.6 else "phone"
            person.devices.append((f"p{i}-d{d}-{kind}", kind))
        t = start_ms + rng.randrange(0, 7 * 86_400_000)
        logged_in = False
        interest = rng.sample(CATEGORIES, 2)
        for step in range(rng.randrange(4, 16)):
            key, kind = rng.choice(person.devices)
            t += rng.randrange(5_000, 600_000 if step % 5 else 3 * 86_400_000)
            params = _step(rng, person, kind, site, t, interest, logged_in)
            logged_in = logged_in or bool(params.get("uid"))
            count += 1
            if malformed_every and count % malformed_every == 0:
                yield Beacon(key, kind, _malformed(count, params))
            yield Beacon(key, kind, urlencode(params))


def _step(
    rng: random.Random,
    p: Person,
    kind: str,
    site: str,
    t: int,
    interest: list[str],
    logged_in: bool,
) -> dict[str, str]:
    cat = rng.choice(interest) if rng.random() < 0.8 else rng.choice(CATEGORIES)
    params = {
        "s": site,
        "ts": str(t),
        "cat": cat,
        "e": "page_view",
        "u": f"https://{site}.example/{cat}/item-{rng.randrange(100)}",
    }
    if kind == "app":
        params |= {"e": "screen_view", "did": f"app-{p.index:05d}"}
    roll = rng.random()
    if roll < 0.10:
        params |= {"e": "email_open", "cmp": rng.choice(CAMPAIGNS), "em": p.email, "u": ""}
    elif roll < 0.18:
        params |= {
            "e": "email_click",
            "cmp": rng.choice(CAMPAIGNS),
            "em": p.email,
            "r": "https://mail.example/",
        }
    elif roll < 0.26 or (logged_in and roll < 0.3):
        params |= {"e": "login", "uid": p.user_id}
    elif roll < 0.36:
        params |= {"e": "add_to_cart", "pid": f"sku-{rng.randrange(1000)}"}
    elif roll < 0.42:
        params |= {
            "e": "purchase",
            "rev": f"{rng.uniform(15, 400):.2f}",
            "cur": "EUR",
            "pid": f"sku-{rng.randrange(1000)}",
        }
    else:
        params["r"] = rng.choice(REFERRERS)
    if logged_in and "uid" not in params:
        params["uid"] = p.user_id
    params["cs"] = p.consent  # what a consent banner's answer adds to every beacon
    return params


def _malformed(count: int, params: dict[str, str]) -> str:
    # Chosen by count, not by the generator's rng, so clean traffic is the same with or without.
    broken = dict(params)
    match count % 3:
        case 0:
            broken.pop("s")  # no site id
        case 1:
            broken["ts"] = "yesterday"
        case _:
            broken["rev"] = "-12"
    return urlencode(broken)


def send_beacons(host: str, port: int, beacons: list[Beacon], connections: int = 4) -> int:
    """Send every beacon as `GET /i`, keeping a cookie per device; return the GIFs received."""
    shards: list[list[Beacon]] = [[] for _ in range(connections)]
    for b in beacons:  # one device always on the same connection: its order holds
        shards[hash(b.device) % connections].append(b)
    received = [0] * connections

    def run(n: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        cookies: dict[str, str] = {}
        for b in shards[n]:
            headers = {"User-Agent": USER_AGENTS[b.kind]}
            if b.device in cookies:
                headers["Cookie"] = cookies[b.device]
            conn.request("GET", f"/i?{b.query}", headers=headers)
            response = conn.getresponse()
            body = response.read()
            cookie = response.getheader("Set-Cookie")
            if cookie and b.kind != "app":
                cookies[b.device] = cookie.split(";", 1)[0]
            received[n] += response.status == 200 and body[:6] == b"GIF89a"
        conn.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(received)
