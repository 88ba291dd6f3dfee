"""Profiles: interests against a direct computation, affinities, lifecycle, value, merges."""

from __future__ import annotations

import copy
import math

from streams.profiles import (
    DAY_MS,
    SignalsConfig,
    apply_events,
    category_of,
    combine,
    consents,
    local_hour,
    new_profile,
)
from streams.summaries import (
    best_hour,
    contacts,
    count_in_window,
    email_by_device,
    interests_at,
    rfm,
    shares,
    summary,
    top_interests,
)

T0 = 1_764_000_000_000
CFG = SignalsConfig(half_life_days=7.0, top_n=3)
_n = iter(range(10**9))


def ev(event_type: str, day: float, **fields: object) -> dict[str, object]:
    return {
        "event_id": f"e{next(_n)}",
        "event_type": event_type,
        "ts_ms": int(T0 + day * DAY_MS),
        "device_id": "c1",
        "device_kind": "cookie",
        **fields,
    }


def direct_score(events: list[dict], category: str, at_ms: int, cfg: SignalsConfig) -> float:
    return sum(
        cfg.weights.get(e["event_type"], 0) * 0.5 ** ((at_ms - e["ts_ms"]) / (7 * DAY_MS))
        for e in events
        if e.get("category") == category
    )


def test_interest_score_equals_the_direct_computation_in_any_arrival_order() -> None:
    events = [
        ev("page_view", 0, category="shoes"),
        ev("add_to_cart", 2.5, category="shoes"),
        ev("purchase", 9, category="shoes", revenue=80.0),
        ev("page_view", 3, category="hats"),
        ev("email_click", 1, category="hats"),
        ev("email_open", 1, category="hats"),  # no weight: opens are not interest
    ]
    now = T0 + 20 * DAY_MS
    for batches in (events, events[::-1]):
        p = new_profile("p1")
        for e in batches:  # one at a time: out-of-order arrivals included
            apply_events(p, [e], CFG)
        got = interests_at(p, now, CFG)
        for category in ("shoes", "hats"):
            assert math.isclose(got[category], direct_score(events, category, now, CFG))
    # 1 + 4·2^(-17.5/7) + 8·2^(-11/7) at day 20
    assert math.isclose(got["shoes"], 2 ** (-20 / 7) + 4 * 2 ** (-17.5 / 7) + 8 * 2 ** (-11 / 7))


def test_top_n_interests_are_kept_and_ranked() -> None:
    p = new_profile("p1")
    events = [ev("page_view", 0, category=c) for c in "abcde" for _ in range("abcde".index(c) + 1)]
    apply_events(p, events, CFG)
    assert [c for c, _ in top_interests(p, T0, CFG, 3)] == ["e", "d", "c"]
    assert set(p["int"]) == {"c", "d", "e"}  # state stays bounded


def test_url_patterns_give_a_category_when_the_event_has_none() -> None:
    cfg = SignalsConfig(url_categories=(("shop.example/shoes/*", "shoes"), ("*/hats*", "hats")))
    assert category_of({"url": "https://shop.example/shoes/red?x=1"}, cfg) == "shoes"
    assert category_of({"url": "http://other/hats"}, cfg) == "hats"
    assert category_of({"url": "https://shop.example/bags/"}, cfg) == ""
    assert category_of({"url": "https://shop.example/shoes/", "category": "sale"}, cfg) == "sale"


def test_redelivered_events_count_once() -> None:
    p = new_profile("p1")
    events = [ev("purchase", 0, revenue=10.0, category="x"), ev("page_view", 1)]
    assert apply_events(p, events, CFG)[0] == 2
    before = copy.deepcopy(p)
    assert apply_events(p, events, CFG)[0] == 0
    assert p == before and p["buys"] == 1


def test_affinities_best_hour_in_the_persons_time_zone() -> None:
    p = new_profile("p1")
    apply_events(
        p,
        [
            ev("email_open", 0, channel="email", device_type="mobile", timezone="Asia/Tokyo"),
            ev("email_open", 1, channel="email", device_type="mobile"),
            ev("email_click", 2, channel="email", device_type="desktop"),
            ev("page_view", 3, channel="organic_search", device_type="desktop"),
        ],
        CFG,
    )
    assert shares(p["ch"]) == {"email": 0.75, "organic_search": 0.25}
    assert shares(p["dev"]) == {"desktop": 0.5, "mobile": 0.5}
    assert email_by_device(p) == {"email_open": {"mobile": 2}, "email_click": {"desktop": 1}}
    tokyo = local_hour(T0, "Asia/Tokyo")
    assert tokyo == ((T0 // 3_600_000) + 9) % 24 and best_hour(p) == tokyo


def test_lifecycle_moments_in_order_and_rfm() -> None:
    cfg = SignalsConfig(repeat_purchases=2, lapsed_days=30)
    p = new_profile("p1")
    _, moments = apply_events(
        p,
        [
            ev("page_view", 0),
            ev("page_view", 1, email_hash="h1"),
            ev("purchase", 2, revenue=40.0),
            ev("purchase", 10, revenue=200.0),
            ev("page_view", 50),
        ],
        cfg,
    )
    assert [(m.previous, m.stage) for m in moments] == [
        ("anonymous", "identified"),
        ("identified", "first_purchase"),
        ("first_purchase", "repeat_buyer"),
        ("repeat_buyer", "lapsed"),
    ]
    assert moments[1].at_ms == T0 + 2 * DAY_MS
    assert p["revenue"] == 240.0 and rfm(p, T0 + 50 * DAY_MS) == (4, 2, 3)
    _, back = apply_events(p, [ev("purchase", 51, revenue=1.0)], cfg)
    assert [(m.previous, m.stage) for m in back] == [("lapsed", "repeat_buyer")]


def test_counts_in_windows_and_contact_pressure() -> None:
    p = new_profile("p1")
    apply_events(
        p,
        [ev("page_view", d, category="shoes") for d in (0, 5, 6, 6)]
        + [ev("email_sent", d) for d in (3, 6)]
        + [ev("ad_shown", 6)],
        CFG,
    )
    now = T0 + 6 * DAY_MS
    assert count_in_window(p, now, 7, "page_view", "shoes") == 4
    assert count_in_window(p, now, 2, "page_view", "shoes") == 3
    assert count_in_window(p, now, 2, category="shoes") == 3
    assert count_in_window(p, now, 7, "purchase") == 0
    assert contacts(p, now, 7, CFG) == 3 and contacts(p, now, 1, CFG) == 2
    assert p["last_ms"] == T0 + 6 * DAY_MS  # contacts are not engagement, but this view is


def test_consent_latest_statement_wins_and_opt_out_blocks() -> None:
    p = new_profile("p1")
    assert not consents(p, CFG)  # no statement: no marketing
    assert consents(p, SignalsConfig(required_consent=""))
    apply_events(p, [ev("page_view", 0, consent=["analytics", "marketing"])], CFG)
    assert consents(p, CFG)
    apply_events(p, [ev("unsubscribe", 1)], CFG)
    assert not consents(p, CFG) and not consents(p, SignalsConfig(required_consent=""))
    apply_events(p, [ev("page_view", 0.5, consent=["marketing"])], CFG)  # older: no effect
    assert not consents(p, CFG)


def test_merge_combines_once_and_equals_one_person_with_all_events() -> None:
    a_events = [ev("page_view", 0, category="shoes"), ev("purchase", 1, revenue=30.0)]
    b_events = [
        ev("page_view", 2, category="shoes", device_id="c2", user_id="u1"),
        ev("purchase", 4, revenue=70.0, category="shoes", device_id="c2"),
    ]
    a, b, whole = new_profile("A"), new_profile("B"), new_profile("A")
    apply_events(a, a_events, CFG)
    apply_events(b, b_events, CFG)
    apply_events(whole, a_events + b_events, CFG)
    done, moments = combine(a, b, CFG)
    assert done and [(m.previous, m.stage) for m in moments] == [("first_purchase", "repeat_buyer")]
    assert combine(a, copy.deepcopy(b), CFG) == (False, [])  # a redelivered merge
    now = T0 + 5 * DAY_MS
    assert a["buys"] == 2 and a["revenue"] == 100.0
    assert math.isclose(interests_at(a, now, CFG)["shoes"], interests_at(whole, now, CFG)["shoes"])
    assert a["ids"] == {"cookie": ["c1", "c2"], "user": ["u1"]}
    assert summary(a, now, CFG)["value"] == summary(whole, now, CFG)["value"]
    assert a["days"] == whole["days"] and a["hours"] == whole["hours"]
    # events of the loser redelivered to the survivor are recognised
    assert apply_events(a, b_events, CFG)[0] == 0
