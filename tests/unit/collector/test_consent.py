"""Consent and opt-out at the edge: nothing stored as if consented."""

from __future__ import annotations

import orjson
import pytest

from collector.consent import ConsentPolicy, Signals, signals_from_headers
from collector.metrics import Metrics
from collector.server import build_routes
from collector.sinks.memory import MemorySink
from tests.unit.collector.helpers import BOTS, RAW, events, get, header, post
from trackpipe.settings import Settings


def policy(**overrides: object) -> ConsentPolicy:
    return ConsentPolicy(Settings(_env_file=None, **overrides))


def test_default_categories_apply_when_the_beacon_says_nothing() -> None:
    decision = policy().decide(Signals(), None)
    assert (decision.action, decision.categories) == ("keep", ("analytics",))


def test_granted_categories_replace_the_default() -> None:
    decision = policy().decide(Signals(), ["advertising", "analytics"])
    assert decision.action == "keep" and decision.advertising


@pytest.mark.parametrize(
    ("signals", "policy_name", "value", "action", "advertising"),
    [
        (Signals(gpc=True), "gpc_policy", "no_advertising", "keep", False),
        (Signals(gpc=True), "gpc_policy", "opt_out", "drop", False),
        (Signals(gpc=True), "gpc_policy", "ignore", "keep", True),
        (Signals(dnt=True), "dnt_policy", "no_advertising", "keep", False),
        (Signals(dnt=True), "dnt_policy", "opt_out", "drop", False),
        (Signals(dnt=True), "dnt_policy", "ignore", "keep", True),
    ],
)
def test_browser_signals_follow_their_policy(signals, policy_name, value, action, advertising):
    decision = policy(**{policy_name: value}).decide(signals, ["analytics", "advertising"])
    assert decision.action == action
    assert decision.advertising is advertising


def test_opt_out_cookie_drops_everything() -> None:
    decision = policy().decide(Signals(opted_out=True), ["analytics", "advertising"])
    assert (decision.action, decision.reason) == ("drop", "opt_out")


@pytest.mark.parametrize("missing", ["anonymize", "drop"])
def test_missing_required_category_anonymizes_or_drops(missing: str) -> None:
    decision = policy(consent_missing=missing).decide(Signals(), ["advertising"])
    assert (decision.action, decision.reason) == (missing, "no_consent")


def _routes(**overrides: object):
    sink, metrics = MemorySink(), Metrics()
    return build_routes(Settings(_env_file=None, **overrides), sink, metrics), sink, metrics


def test_event_without_consent_is_stored_about_nobody() -> None:
    routes, sink, metrics = _routes()
    vid = "ab" * 16
    response = post(
        routes,
        "/collect",
        {
            "site": "shop",
            "consent": [],
            "user_id": "u1",
            "email": "a@b.c",
            "advertising_id": "ad-1",
        },
        {"cookie": f"tp_vid={vid}"},
    )
    [event] = events(sink)
    assert event["device_kind"] == "anonymous" and event["device_id"] != vid
    assert (event["user_id"], event["email_hash"], event["advertising_id"]) == ("", "", "")
    assert (event["ip"], event["user_agent"]) == ("", "")
    assert event["consent"] == []
    ad_only = post(
        routes, "/collect", {"site": "shop", "consent": ["advertising"], "advertising_id": "ad-2"}
    )
    assert ad_only.status == 200 and events(sink)[1]["advertising_id"] == ""
    assert event["browser"] == "Chrome"  # coarse enrichment survives, the raw UA does not
    assert header(response, "Set-Cookie") == []  # no cookie without consent
    assert metrics.get("consent_anonymized_total", reason="no_consent") == 2


def test_drop_policy_counts_instead_of_storing() -> None:
    routes, sink, metrics = _routes(consent_missing="drop", consent_default=[])
    get(routes, "/i", "s=shop")
    post(routes, "/collect", [{"site": "shop"}, {"site": "shop", "consent": ["analytics"]}])
    assert len(events(sink)) == 1
    assert metrics.get("consent_dropped_total", reason="no_consent") == 2


def test_pixel_consent_parameter_and_gpc_header() -> None:
    routes, sink, _ = _routes()
    get(routes, "/i", "s=shop&cs=analytics,advertising&aid=ad-9")
    get(routes, "/i", "s=shop&cs=analytics,advertising&aid=ad-9", {"sec-gpc": "1"})
    with_ad, gpc = events(sink)
    assert with_ad["advertising_id"] == "ad-9"
    assert gpc["advertising_id"] == "" and gpc["consent"] == ["analytics"]


def test_opt_out_endpoint_stops_collection_for_that_browser() -> None:
    routes, sink, metrics = _routes()
    response = get(routes, "/optout")
    assert response.status == 200 and orjson.loads(response.body) == {"opted_out": True}
    cookies = header(response, "Set-Cookie")
    assert any(c.startswith("tp_optout=1;") for c in cookies)
    assert any(c.startswith("tp_vid=;") and "Max-Age=0" in c for c in cookies)
    opted_out = {"cookie": "tp_optout=1; tp_vid=" + "ab" * 16}
    pixel = get(routes, "/i", "s=shop", opted_out)
    assert pixel.status == 200 and pixel.content_type == "image/gif"  # still its GIF
    assert header(pixel, "Set-Cookie") == []
    post(routes, "/collect", {"site": "shop"}, opted_out)
    assert sink.records[RAW] == [] and sink.records[BOTS] == []
    assert metrics.get("consent_dropped_total", reason="opt_out") == 2
    back = get(routes, "/optin")
    assert any(c.startswith("tp_optout=;") and "Max-Age=0" in c for c in header(back, "Set-Cookie"))


def test_nothing_about_an_opted_out_browser_is_stored_not_even_dead_letters() -> None:
    routes, sink, metrics = _routes()
    opted_out = {"cookie": "tp_optout=1"}
    get(routes, "/i", "s=bad site!&uid=u1", opted_out)
    post(routes, "/collect", b"{broken", opted_out)
    post(routes, "/collect", [{"site": "shop"}, {"site": "bad site!"}, 3], opted_out)
    get(routes, "/e/c", "u=https://evil.example/", opted_out)
    assert sum(len(records) for records in sink.records.values()) == 0
    assert metrics.get("consent_dropped_total", reason="opt_out") == 1 + 1 + 3 + 1


def test_an_erased_persons_events_are_dropped_from_every_endpoint() -> None:
    from trackpipe.suppression import SuppressionList, suppression_key

    settings = Settings(_env_file=None, segment_write_keys={"shop": "wk"})
    sink, metrics = MemorySink(), Metrics()
    suppressions = SuppressionList("", settings.topic_suppressions)
    suppressions.add([suppression_key("user", "gone")])
    routes = build_routes(settings, sink, metrics, suppressions)
    post(routes, "/collect", [{"site": "shop", "user_id": "gone"}, {"site": "shop"}])
    response = post(routes, "/collect", {"site": "shop", "user_id": "gone"})
    assert header(response, "Set-Cookie") == []  # nothing stored: no cookie renewed either
    post(routes, "/v1/track", {"userId": "gone", "event": "e"}, {"authorization": "Basic d2s6"})
    assert len(events(sink)) == 1
    assert metrics.get("events_suppressed_total") == 3


def test_consent_categories_are_compared_lower_case() -> None:
    routes, sink, _ = _routes()
    post(
        routes,
        "/collect",
        {"site": "shop", "consent": [" Analytics", "ADVERTISING"], "advertising_id": "ad-1"},
    )
    get(routes, "/i", "s=shop&cs=Analytics,Advertising&aid=ad-2")
    assert [e["consent"] for e in events(sink)] == [["advertising", "analytics"]] * 2
    assert [e["advertising_id"] for e in events(sink)] == ["ad-1", "ad-2"]


@pytest.mark.parametrize("opted_out", [False, True])
@pytest.mark.parametrize("gpc", [None, "1", " 1 ", "0", ""])
@pytest.mark.parametrize("dnt", [None, "1", "0"])
def test_signals_from_headers_are_the_headers_values(
    opted_out: bool, gpc: str | None, dnt: str | None
) -> None:
    headers = {k: v for k, v in (("sec-gpc", gpc), ("dnt", dnt)) if v is not None}
    expected = Signals(opted_out, (gpc or "").strip() == "1", (dnt or "").strip() == "1")
    signals = signals_from_headers(headers, opted_out)
    assert signals == expected
    assert type(signals) is Signals
