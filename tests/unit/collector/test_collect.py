"""POST /collect: one event or a batch, JSON or sendBeacon text/plain, limits, CORS."""

from __future__ import annotations

import gzip

import orjson
import pytest

from collector.metrics import Metrics
from collector.server import build_routes
from collector.sinks.memory import MemorySink
from tests.unit.collector.helpers import DEAD, RAW, events, header, post
from trackpipe.settings import Settings


def test_one_event_is_accepted_with_its_fields(routes, sink) -> None:
    response = post(
        routes,
        "/collect",
        {
            "type": "add_to_cart",
            "site": "shop",
            "url": "https://shop.example/p/1",
            "product_id": "p1",
            "title": "Red shoes",
            "message_id": "m-1",
            "props": {"size": 42},
        },
    )
    assert response.status == 200
    assert orjson.loads(response.body) == {"ok": True, "accepted": 1, "rejected": []}
    [event] = events(sink)
    assert (event["event_type"], event["product_id"], event["page_title"]) == (
        "add_to_cart",
        "p1",
        "Red shoes",
    )
    assert event["source"] == "collect" and event["message_id"] == "m-1"
    assert event["props"] == {"size": 42}
    assert event["consent"] == ["analytics"]  # the configured default, carried on the event
    assert header(response, "Set-Cookie")[0].startswith("tp_vid=")


def test_sendbeacon_text_plain_batch_is_accepted(routes, sink) -> None:
    body = orjson.dumps([{"site": "shop"}, {"site": "shop", "type": "click"}])
    response = post(routes, "/collect", body, {"content-type": "text/plain;charset=UTF-8"})
    assert orjson.loads(response.body)["accepted"] == 2
    assert [e["event_type"] for e in events(sink)] == ["page_view", "click"]


def test_bad_items_are_dead_lettered_one_by_one_and_the_good_ones_kept(
    routes, sink, metrics
) -> None:
    batch = [
        {"site": "shop"},
        {"site": "bad site!"},
        {"site": "shop", "revenue": -1, "email": "jane@example.com"},
        {"site": "shop", "unknown_field": 1},
        "not an object",
        {"site": "shop", "type": "purchase", "revenue": 10.5, "currency": "EUR"},
    ]
    response = post(routes, "/collect", batch)
    answer = orjson.loads(response.body)
    assert response.status == 200 and answer["accepted"] == 2 and answer["ok"] is False
    assert [r["index"] for r in answer["rejected"]] == [1, 2, 3, 4]
    assert "site" in answer["rejected"][0]["message"]
    letters = events(sink, DEAD)
    assert [x["reason"] for x in letters] == ["invalid"] * 4
    assert all(x["source"] == "collect" for x in letters)
    assert "jane" not in letters[1]["raw"] and "<redacted>" in letters[1]["raw"]
    assert metrics.get("dead_letters_total", reason="invalid", source="collect") == 4
    assert len(events(sink)) == 2


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"{not json", "unparsable"), (b"", "empty"), (b"[]", "empty")],
)
def test_unreadable_bodies_get_a_clear_400_and_a_dead_letter(routes, sink, body, code) -> None:
    response = post(routes, "/collect", body)
    assert response.status == 400
    answer = orjson.loads(response.body)
    assert answer["code"] == code and answer["message"]
    assert [x["reason"] for x in events(sink, DEAD)] == [code]


def _routes(**overrides: object) -> tuple:
    sink, metrics = MemorySink(), Metrics()
    settings = Settings(_env_file=None, **overrides)
    return build_routes(settings, sink, metrics), sink, metrics


def test_limits_batch_length_soft_body_and_event_size() -> None:
    routes, sink, _ = _routes(max_batch_events=3, soft_body_bytes=2000, max_event_bytes=300)
    too_long = post(routes, "/collect", [{"site": "shop"}] * 4)
    assert too_long.status == 400 and orjson.loads(too_long.body)["code"] == "batch_too_long"
    too_big = post(routes, "/collect", [{"site": "shop", "props": {"x": "y" * 2000}}])
    assert too_big.status == 413 and orjson.loads(too_big.body)["code"] == "too_large"
    mixed = post(routes, "/collect", [{"site": "shop", "props": {"x": "y" * 400}}, {"site": "a"}])
    assert orjson.loads(mixed.body)["rejected"][0]["code"] == "too_large"
    assert [x["reason"] for x in events(sink, DEAD)] == ["batch_too_long", "too_large", "too_large"]
    assert len(events(sink)) == 1


def test_gzip_bodies_are_inflated_within_the_limit() -> None:
    routes, sink, _ = _routes(soft_body_bytes=5000)
    ok = post(
        routes,
        "/collect",
        gzip.compress(orjson.dumps({"site": "shop"})),
        {"content-encoding": "gzip"},
    )
    assert ok.status == 200 and len(events(sink)) == 1
    bomb = post(
        routes,
        "/collect",
        gzip.compress(b"[" + b" " * 100_000 + b"]"),
        {"content-encoding": "gzip"},
    )
    assert bomb.status == 413


def test_client_clock_skew_is_corrected_with_sent_at(routes, sink) -> None:
    import time

    now = int(time.time() * 1000)
    skew = 3_600_000  # the client's clock is an hour fast
    post(routes, "/collect", {"site": "shop", "ts": now + skew - 5000, "sent_at": now + skew})
    [event] = events(sink)
    assert abs(event["ts_ms"] - (event["received_ms"] - 5000)) < 50


def test_tracker_visitor_id_and_app_device_id_key_the_event(routes, sink) -> None:
    vid = "ab" * 16
    post(
        routes,
        "/collect",
        [{"site": "shop", "visitor_id": vid}, {"site": "shop", "device_id": "app-1"}],
    )
    first, second = sink.records[RAW]
    assert first[0] == vid.encode() and orjson.loads(first[1])["device_kind"] == "cookie"
    assert second[0] == b"app-1" and orjson.loads(second[1])["device_kind"] == "app"


def test_cors_only_for_configured_origins() -> None:
    routes, _, _ = _routes(cors_origins=["https://shop.example"])
    allowed = post(routes, "/collect", {"site": "shop"}, {"origin": "https://shop.example"})
    assert header(allowed, "Access-Control-Allow-Origin") == ["https://shop.example"]
    assert header(allowed, "Access-Control-Allow-Credentials") == ["true"]
    other = post(routes, "/collect", {"site": "shop"}, {"origin": "https://evil.example"})
    assert header(other, "Access-Control-Allow-Origin") == []
    from collector.http import Request

    pre = routes(Request("OPTIONS", "/collect", "", {"origin": "https://shop.example"}, b"", ""))
    assert pre.status == 204 and "POST" in header(pre, "Access-Control-Allow-Methods")[0]
    denied = routes(Request("OPTIONS", "/collect", "", {"origin": "https://evil.example"}, b"", ""))
    assert denied.status == 403


class FullSink(MemorySink):
    """A sink whose spool is full: what the delivery layer reports with `accepting`."""

    @property
    def accepting(self) -> bool:
        return False


def test_a_full_spool_answers_503_without_reading() -> None:
    sink = FullSink()
    settings = Settings(_env_file=None, segment_write_keys={"shop": "wk"})
    routes = build_routes(settings, sink, Metrics())
    basic = {"authorization": "Basic d2s6"}  # "wk:"
    for path, headers in (("/collect", {}), ("/v1/track", basic), ("/v1/batch", basic)):
        response = post(routes, path, {"site": "shop", "userId": "u", "event": "e"}, headers)
        assert response.status == 503, path
        assert orjson.loads(response.body)["code"] == "unavailable"
    assert sink.records[RAW] == [] and sink.records[DEAD] == []


def test_emails_anywhere_in_an_event_are_hashed(routes, sink) -> None:
    post(
        routes,
        "/collect",
        {
            "site": "shop",
            "url": "https://s.ex/?e=jane%40example.com",
            "props": {"contact": {"email": "jane@example.com"}},
        },
    )
    [(_, raw)] = sink.records[RAW]
    assert b"jane" not in raw
    assert events(sink)[0]["props"]["contact"]["email"].startswith("sha256:")
