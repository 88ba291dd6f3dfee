from __future__ import annotations

import orjson

from collector.http import Request, Response
from collector.metrics import Metrics
from collector.routes import PIXEL_GIF, Routes
from collector.sinks.memory import MemorySink
from trackpipe.settings import Settings


def get(routes: Routes, query: str, cookie: str = "", ip: str = "198.51.100.23") -> Response:
    headers = {"user-agent": "Mozilla/5.0 test"}
    if cookie:
        headers["cookie"] = cookie
    return routes(Request("GET", "/i", query, headers, b"", ip))


def set_cookie(response: Response) -> str:
    return next(v for k, v in response.headers if k == "Set-Cookie")


def test_pixel_answers_the_43_byte_gif_without_caching(routes: Routes) -> None:
    response = get(routes, "s=shop&e=page_view")
    assert response.status == 200
    assert response.body == PIXEL_GIF and len(PIXEL_GIF) == 43
    assert response.content_type == "image/gif"
    assert ("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0") in response.headers


def test_good_pixel_becomes_an_event_keyed_by_the_visitor_cookie(
    routes: Routes, sink: MemorySink, settings: Settings
) -> None:
    response = get(routes, "s=shop&e=purchase&rev=19.90&cur=EUR&cat=shoes&ts=1764000000000")
    visitor = set_cookie(response).split(";")[0].split("=")[1]
    [(key, value)] = sink.records[settings.topic_raw]
    event = orjson.loads(value)
    assert key == visitor.encode() == event["device_id"].encode()
    assert event["device_kind"] == "cookie"
    assert (event["event_type"], event["revenue"], event["currency"]) == ("purchase", 19.9, "EUR")
    assert event["ts_ms"] == 1764000000000
    assert event["ip"] == "198.51.100.0"  # anonymised by default


def test_existing_cookie_is_kept_and_renewed(routes: Routes, sink: MemorySink) -> None:
    visitor = "0123456789abcdef0123456789abcdef"
    response = get(routes, "s=shop", cookie=f"other=1; tp_vid={visitor}")
    assert set_cookie(response).startswith(f"tp_vid={visitor};")
    assert "Max-Age=" in set_cookie(response)
    assert orjson.loads(sink.records["trackpipe.events.raw"][0][1])["device_id"] == visitor


def test_tampered_cookie_is_replaced(routes: Routes) -> None:
    response = get(routes, "s=shop", cookie="tp_vid=<script>")
    assert "<script>" not in set_cookie(response)


def test_app_device_id_wins_over_the_cookie(routes: Routes, sink: MemorySink) -> None:
    get(routes, "s=shop&e=screen_view&did=app-42")
    key, value = sink.records["trackpipe.events.raw"][0]
    assert key == b"app-42"
    assert orjson.loads(value)["device_kind"] == "app"


def test_email_is_hashed_and_never_travels_in_clear(routes: Routes, sink: MemorySink) -> None:
    get(routes, "s=shop&e=email_open&em=Jane%40Example.com")
    raw = sink.records["trackpipe.events.raw"][0][1]
    assert b"jane" not in raw.lower()
    assert len(orjson.loads(raw)["email_hash"]) == 64


def test_malformed_pixel_still_gets_its_gif_and_is_dead_lettered(
    routes: Routes, sink: MemorySink, metrics: Metrics
) -> None:
    for query in [
        "e=page_view",
        "s=shop&ts=yesterday",
        "s=shop&rev=-3",
        "s=bad site!",
        "s=shop&e=DROP%20TABLE",
        "s=shop&cur=euro&em=jane%40x.com",
    ]:
        response = get(routes, query)
        assert response.status == 200 and response.body == PIXEL_GIF
    assert sink.records["trackpipe.events.raw"] == []
    letters = [orjson.loads(v) for _, v in sink.records["trackpipe.events.dead"]]
    assert len(letters) == 6
    assert {letter["reason"] for letter in letters} == {"invalid"}
    assert "ts" in letters[1]["detail"]
    assert letters[5]["raw"] == "s=shop&cur=euro&em=<redacted>"  # PII never in dead letters
    assert metrics.get("dead_letters_total", reason="invalid", source="pixel") == 6


def test_readiness_follows_the_sink(routes: Routes, sink: MemorySink) -> None:
    assert routes(Request("GET", "/readyz", "", {}, b"", "")).status == 200
    sink.is_healthy = False
    assert routes(Request("GET", "/readyz", "", {}, b"", "")).status == 503
    assert routes(Request("GET", "/healthz", "", {}, b"", "")).status == 200


def test_unknown_path_and_wrong_method(routes: Routes) -> None:
    assert routes(Request("GET", "/nope", "", {}, b"", "")).status == 404
    assert routes(Request("POST", "/i", "", {}, b"", "")).status == 405


def test_metrics_exposes_counters(routes: Routes) -> None:
    get(routes, "s=shop")
    get(routes, "nothing=here")
    text = routes(Request("GET", "/metrics", "", {}, b"", "")).body.decode()
    assert 'trackpipe_events_accepted_total{type="page_view"} 1' in text
    assert 'trackpipe_dead_letters_total{reason="invalid",source="pixel"} 1' in text
    assert "trackpipe_produce_latency_seconds_count" in text


def test_metrics_count_dead_letters_consent_drops_and_bots(routes: Routes) -> None:
    get(routes, "s=shop&ts=never")
    routes(Request("GET", "/i", "s=shop", {"cookie": "tp_optout=1"}, b"", "1.2.3.4"))
    routes(Request("GET", "/i", "s=shop", {"user-agent": "Googlebot/2.1"}, b"", "1.2.3.4"))
    routes(Request("POST", "/collect", "", {}, b"{oops", "1.2.3.4"))
    text = routes(Request("GET", "/metrics", "", {}, b"", "")).body.decode()
    assert 'trackpipe_dead_letters_total{reason="invalid",source="pixel"} 1' in text
    assert 'trackpipe_dead_letters_total{reason="unparsable",source="collect"} 1' in text
    assert 'trackpipe_consent_dropped_total{reason="opt_out"} 1' in text
    assert 'trackpipe_bots_total{source="pixel"} 1' in text
    assert 'trackpipe_responses_refused_total{path="/collect",status="400"} 1' in text
