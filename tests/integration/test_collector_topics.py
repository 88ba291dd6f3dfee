"""Every endpoint over HTTP against a collector process on real Kafka: each event sent is on
exactly one topic — raw (people), bots or dead letters — or counted as a consent drop."""

from __future__ import annotations

import http.client
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from collector.email import sign_link
from tests.integration.collector_process import collector, collector_overrides
from trackpipe.kafka_admin import read_all
from trackpipe.processes import http_get

pytestmark = pytest.mark.integration

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Safari/605.1.15"
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
LINK_KEY = "integration-link-key"


class Client:
    def __init__(self, url: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", urlsplit(url).port, timeout=10)

    def send(self, method: str, path: str, body: bytes = b"", **headers: str) -> int:
        headers = {"User-Agent": BROWSER, **{k.replace("_", "-"): v for k, v in headers.items()}}
        self.conn.request(method, path, body=body or None, headers=headers)
        response = self.conn.getresponse()
        response.read()
        return response.status


def test_every_event_lands_on_exactly_one_topic(
    kafka_bootstrap: str, uid: str, tmp_path: Path
) -> None:
    overrides = collector_overrides(kafka_bootstrap, uid, email_link_key=LINK_KEY)
    good_batch = [
        {"site": "shop", "type": "page_view", "url": f"https://s.ex/{i}"} for i in range(50)
    ]
    mixed_batch = [{"site": "shop"}, {"site": "bad site!"}, {"nope": 1}, {"site": "shop"}]
    with collector(overrides, tmp_path / "logs") as url:
        client = Client(url)
        sent = {"raw": 0, "bots": 0, "dead": 0, "dropped": 0}
        assert (
            client.send("POST", "/collect", orjson.dumps(good_batch), Content_Type="text/plain")
            == 200
        )
        sent["raw"] += 50
        assert client.send("POST", "/collect", orjson.dumps(mixed_batch)) == 200
        sent["raw"] += 2
        sent["dead"] += 2
        assert client.send("POST", "/collect", b"{not json") == 400
        sent["dead"] += 1
        for i in range(20):
            assert client.send("GET", f"/i?s=shop&e=page_view&u=p{i}", User_Agent=BOT) == 200
        sent["bots"] += 20
        assert client.send("GET", "/i?e=no_site") == 200
        sent["dead"] += 1
        assert client.send("GET", "/i?s=shop", Cookie="tp_optout=1") == 200
        sent["dropped"] += 1
        key = LINK_KEY.encode()
        click = urlsplit(sign_link(url, key, "shop", "winter", "user-1", "https://shop.ex/"))
        assert client.send("GET", f"{click.path}?{click.query}") == 302
        opened = urlsplit(sign_link(url, key, "shop", "winter", "user-1"))
        assert client.send("GET", f"{opened.path}?{opened.query}") == 200
        sent["raw"] += 2
        forged = click.query.replace("shop.ex", "evil.ex")
        assert client.send("GET", f"{click.path}?{forged}") == 400
        sent["dead"] += 1
        client.conn.close()
        metrics = http_get(f"{url}/metrics")[1].decode()
    raw = read_all(kafka_bootstrap, f"raw-{uid}", idle_s=1.5)
    bots = read_all(kafka_bootstrap, f"bots-{uid}", idle_s=0.5)
    dead = read_all(kafka_bootstrap, f"dead-{uid}", idle_s=0.5)
    assert (len(raw), len(bots), len(dead)) == (sent["raw"], sent["bots"], sent["dead"])
    assert 'trackpipe_consent_dropped_total{reason="opt_out"} 1' in metrics
    assert all(not orjson.loads(v)["is_bot"] for _, v in raw)
    assert all(orjson.loads(v)["is_bot"] for _, v in bots)
    reasons = sorted(orjson.loads(v)["reason"] for _, v in dead)
    assert reasons == ["bad_signature", "invalid", "invalid", "invalid", "unparsable"]
