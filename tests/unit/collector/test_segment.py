"""Segment's HTTP Tracking API: write keys, message shapes, timestamps, identities."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from collector.metrics import Metrics
from collector.routes import Routes
from collector.server import build_routes
from collector.sinks.memory import MemorySink
from tests.unit.collector.helpers import DEAD, events, post
from trackpipe.settings import Settings

KEY = "wk_live_shop"


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, segment_write_keys={"shop": KEY, "blog": "wk_blog"})


def auth(key: str = KEY) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


def test_write_key_selects_the_site_and_a_wrong_one_gets_401(routes: Routes, sink) -> None:
    msg = {"userId": "u1", "event": "Viewed Home"}
    assert post(routes, "/v1/track", msg, auth("wk_blog")).status == 200
    assert events(sink)[0]["site_id"] == "blog"
    for headers in (
        auth("nope"),
        {},
        {"authorization": "Basic !!!"},
        {"authorization": "Bearer x"},
    ):
        response = post(routes, "/v1/track", msg, headers)
        assert response.status == 401
        assert orjson.loads(response.body)["code"] == "unauthorized"
    assert len(events(sink)) == 1


def test_write_key_in_the_body_as_analytics_js_sends_it(routes: Routes, sink) -> None:
    assert post(routes, "/v1/page", {"anonymousId": "a1", "writeKey": KEY}).status == 200
    assert events(sink)[0]["event_type"] == "page_view"


def test_track_maps_names_properties_ids_and_email(routes: Routes, sink) -> None:
    response = post(
        routes,
        "/v1/track",
        {
            "userId": 42,
            "anonymousId": "anon-1",
            "messageId": "msg-123",
            "event": "Order Completed",
            "properties": {"revenue": 99.5, "currency": "usd", "email": "Jane@Example.com"},
            "context": {
                "ip": "203.0.113.9",
                "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) "
                "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
                "campaign": {"name": "winter", "source": "google", "medium": "cpc"},
                "locale": "fr-FR",
                "timezone": "Europe/Paris",
            },
        },
        auth(),
    )
    assert orjson.loads(response.body) == {"success": True}
    [event] = events(sink)
    assert event["event_type"] == "purchase"  # Segment's e-commerce spec name, mapped
    assert (event["revenue"], event["currency"]) == (99.5, "USD")
    assert event["user_id"] == "42" and event["device_id"] == "anon-1"
    assert event["message_id"] == "msg-123" and event["source"] == "segment"
    assert event["email_hash"] == hashlib.sha256(b"jane@example.com").hexdigest()
    assert "Jane" not in orjson.dumps(event).decode()
    assert event["props"]["event"] == "Order Completed"
    assert event["ip"] == "203.0.113.0"  # context.ip, anonymised
    assert (event["os"], event["device_type"]) == ("iOS", "mobile")
    assert (event["campaign"], event["channel"]) == ("winter", "paid_search")
    assert (event["locale"], event["timezone"]) == ("fr-FR", "Europe/Paris")


def test_every_call_type_becomes_an_event(routes: Routes, sink) -> None:
    post(
        routes,
        "/v1/identify",
        {"userId": "u1", "traits": {"email": "a@b.c", "plan": "pro"}},
        auth(),
    )
    post(routes, "/v1/alias", {"userId": "u1", "previousId": "anon-9"}, auth())
    post(routes, "/v1/group", {"userId": "u1", "groupId": "acme", "traits": {"size": 10}}, auth())
    post(
        routes,
        "/v1/screen",
        {"anonymousId": "a", "name": "Home", "context": {"device": {"id": "dev-1"}}},
        auth(),
    )
    got = events(sink)
    assert [e["event_type"] for e in got] == ["identify", "alias", "group", "screen_view"]
    assert got[0]["props"] == {"plan": "pro"} and got[0]["email_hash"]
    assert got[1]["props"]["previous_id"] == "anon-9"
    assert got[1]["device_kind"] == "user" and got[1]["device_id"] == "user:u1"
    assert got[2]["props"] == {"size": 10, "group_id": "acme"}
    assert (got[3]["device_id"], got[3]["device_kind"]) == ("dev-1", "app")
    assert got[3]["page_title"] == "Home"


def test_timestamp_is_corrected_by_received_minus_sent(routes: Routes, sink) -> None:
    skewed_now = datetime.now(tz=UTC) + timedelta(hours=2)  # the client's clock is 2 h fast
    batch = {
        "batch": [
            {
                "type": "track",
                "userId": "u",
                "event": "a",
                "timestamp": iso(skewed_now - timedelta(seconds=30)),
            },
            {"type": "track", "userId": "u", "event": "b"},  # no timestamp: arrival time
        ],
        "sentAt": iso(skewed_now),
    }
    post(routes, "/v1/batch", batch, auth())
    first, second = events(sink)
    assert abs(first["ts_ms"] - (first["received_ms"] - 30_000)) < 100
    assert second["ts_ms"] == second["received_ms"]


def test_without_sent_at_the_timestamp_is_taken_as_is(routes: Routes, sink) -> None:
    post(
        routes,
        "/v1/track",
        {"userId": "u", "event": "x", "timestamp": "2026-01-02T03:04:05.678Z"},
        auth(),
    )
    assert events(sink)[0]["ts_ms"] == 1767323045678


def test_bad_messages_in_a_batch_are_dead_lettered_alone(routes: Routes, sink) -> None:
    batch = {
        "batch": [
            {"type": "track", "userId": "u", "event": "Good"},
            {"type": "track", "event": "No ids"},
            {"type": "launch", "userId": "u"},
            {"type": "track", "userId": "u", "event": "!!!"},
            {
                "type": "identify",
                "anonymousId": "a",
                "traits": {"email": "x@y.z"},
                "userId": ["list"],
            },
        ]
    }
    assert post(routes, "/v1/batch", batch, auth()).status == 200
    assert [e["event_type"] for e in events(sink)] == ["good"]
    letters = events(sink, DEAD)
    assert [x["reason"] for x in letters] == ["invalid"] * 4
    assert "userId or anonymousId" in letters[0]["detail"]
    assert "x@y.z" not in letters[3]["raw"]


def test_batch_needs_a_list_and_respects_the_length_limit() -> None:
    settings = Settings(_env_file=None, segment_write_keys={"shop": KEY}, max_batch_events=2)
    sink = MemorySink()
    routes = build_routes(settings, sink, Metrics())
    assert post(routes, "/v1/batch", {"batch": "nope"}, auth()).status == 400
    long = {"batch": [{"type": "track", "userId": "u", "event": "e"}] * 3}
    response = post(routes, "/v1/batch", long, auth())
    assert response.status == 400 and orjson.loads(response.body)["code"] == "batch_too_long"
    assert [x["reason"] for x in events(sink, DEAD)] == ["invalid", "batch_too_long"]


def test_advertising_id_needs_advertising_consent(routes: Routes, sink) -> None:
    device = {"id": "d1", "advertisingId": "IDFA-1", "adTrackingEnabled": True}
    granted = {"categoryPreferences": {"Analytics": True, "Advertising": True}}
    refused = {"categoryPreferences": {"Analytics": True, "Advertising": False}}
    for consent in (granted, refused, None):
        context = {"device": device} | ({"consent": consent} if consent else {})
        post(routes, "/v1/track", {"userId": "u", "event": "e", "context": context}, auth())
    ids = [e["advertising_id"] for e in events(sink)]
    assert ids == ["IDFA-1", "", ""]  # the default categories do not include advertising
    assert events(sink)[0]["consent"] == ["advertising", "analytics"]


def test_analytics_js_short_paths_text_plain_and_cors() -> None:
    settings = Settings(
        _env_file=None, segment_write_keys={"shop": KEY}, cors_origins=["https://shop.example"]
    )
    sink = MemorySink()
    routes = build_routes(settings, sink, Metrics())
    browser = {"content-type": "text/plain", "origin": "https://shop.example"}
    for path, body in [
        ("/v1/t", {"writeKey": KEY, "anonymousId": "a", "event": "Clicked"}),
        ("/v1/p", {"writeKey": KEY, "anonymousId": "a", "name": "Home"}),
        ("/v1/b", {"writeKey": KEY, "batch": [{"type": "identify", "anonymousId": "a"}]}),
    ]:
        response = post(routes, path, body, browser)
        assert response.status == 200, path
        assert ("Access-Control-Allow-Origin", "https://shop.example") in response.headers
    assert [e["event_type"] for e in events(sink)] == ["clicked", "page_view", "identify"]
    from collector.http import Request

    pre = routes(Request("OPTIONS", "/v1/t", "", {"origin": "https://shop.example"}, b"", ""))
    assert pre.status == 204


def test_a_broken_batch_clock_does_not_cost_the_messages(routes: Routes, sink) -> None:
    batch = {"batch": [{"type": "track", "userId": "u", "event": "e"}], "sentAt": "yesterday"}
    assert post(routes, "/v1/batch", batch, auth()).status == 200
    assert [e["event_type"] for e in events(sink)] == ["e"]
