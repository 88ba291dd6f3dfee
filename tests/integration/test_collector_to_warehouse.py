"""JSON events and Segment calls through the whole pipeline: every enriched field, the
consent list and the properties are queryable in the warehouse, on both stacks."""

from __future__ import annotations

import base64
import http.client
from pathlib import Path

import orjson
import pytest

from tests.integration.conftest import Stack
from trackpipe.processes import Pipeline

pytestmark = pytest.mark.integration

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)


def post(port: int, path: str, body: object, **headers: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, orjson.dumps(body), {"User-Agent": IPHONE, **headers})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_enriched_events_are_queryable(stack: Stack, tmp_path: Path) -> None:
    overrides = stack.overrides | {
        "segment_write_keys": orjson.dumps({"shop": "wk"}).decode(),
        "topic_bots": f"bots-{stack.overrides['topic_raw']}",
    }
    collect = [
        {
            "site": "shop",
            "url": "https://shop.example/?utm_source=news&utm_medium=email",
            "title": "Home",
            "consent": ["analytics", "advertising"],
            "advertising_id": "ad-1",
            "props": {"size": 42, "tags": ["a", "b"]},
            "message_id": "c-1",
        },
        {
            "site": "shop",
            "type": "add_to_cart",
            "referrer": "https://www.google.de/",
            "locale": "de-DE",
            "timezone": "Europe/Berlin",
            "message_id": "c-2",
        },
    ]
    track = {
        "userId": "u-1",
        "event": "Order Completed",
        "messageId": "s-1",
        "properties": {"revenue": 25.5, "currency": "eur"},
    }
    with Pipeline(overrides, tmp_path / "logs") as pipeline:
        port = int(overrides["collector_port"])
        assert post(port, "/collect", collect) == 200
        auth = "Basic " + base64.b64encode(b"wk:").decode()
        assert post(port, "/v1/track", track, Authorization=auth) == 200
        assert pipeline.wait_rows_written(3, timeout_s=60) == 3
    columns = (
        "message_id, source, channel, utm_medium, device_type, os, browser, is_bot, consent, "
        "advertising_id, page_title, locale, timezone, props, revenue, currency, event_type"
    )
    with stack.warehouse() as wh:
        rows = wh.query(f"SELECT {columns} FROM {wh.database}.events ORDER BY message_id")
    by_id = {row[0]: dict(zip(columns.split(", "), row, strict=True)) for row in rows}
    first, second, segment = by_id["c-1"], by_id["c-2"], by_id["s-1"]
    assert (first["source"], first["channel"], first["utm_medium"]) == ("collect", "email", "email")
    assert (first["device_type"], first["os"], first["browser"]) == ("mobile", "iOS", "Safari")
    assert first["is_bot"] == 0
    assert list(first["consent"]) == ["advertising", "analytics"]
    assert (first["advertising_id"], first["page_title"]) == ("ad-1", "Home")
    assert orjson.loads(first["props"]) == {"size": 42, "tags": ["a", "b"]}
    assert (second["channel"], second["locale"], second["timezone"]) == (
        "organic_search",
        "de-DE",
        "Europe/Berlin",
    )
    assert list(second["consent"]) == ["analytics"] and second["advertising_id"] == ""
    assert (segment["source"], segment["event_type"]) == ("segment", "purchase")
    assert (segment["revenue"], segment["currency"]) == (25.5, "EUR")
