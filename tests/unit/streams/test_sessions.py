"""Sessions in event time: gap splits, out-of-order inserts, merges, closing, switches."""

from __future__ import annotations

from streams.sessions import Session, Sessionizer, summary

GAP = 100


def ev(ts: int, eid: str, device: str = "d1", kind: str = "page_view", revenue: float = 0.0):
    return [ts, eid, device, "mobile", kind, f"/{eid}", "email", "news", revenue]


def test_gap_splits_and_late_event_bridges_two_sessions() -> None:
    s = Sessionizer(GAP)
    for ts, eid in ((0, "a"), (50, "b"), (200, "d")):
        s.add("p", ev(ts, eid))
    assert [len(x.events) for x in s.open["p"]] == [2, 1]
    s.add("p", ev(120, "c"))  # out of order: within the gap of both sides
    assert [[e[1] for e in x.events] for x in s.open["p"]] == [["a", "b", "c", "d"]]


def test_exactly_one_gap_apart_is_a_new_session() -> None:
    s = Sessionizer(GAP)
    s.add("p", ev(0, "a"))
    s.add("p", ev(GAP, "b"))
    assert len(s.open["p"]) == 2


def test_duplicate_event_ids_are_ignored() -> None:
    s = Sessionizer(GAP)
    assert s.add("p", ev(0, "a")) and not s.add("p", ev(0, "a"))
    assert len(s.open["p"][0].events) == 1


def test_absorb_joins_open_sessions_within_the_gap_and_keeps_history() -> None:
    s = Sessionizer(GAP)
    s.add("anon", ev(10, "x", device="phone"))
    s.add("user", ev(40, "y", device="laptop"))
    s.add("user", ev(70, "z", device="phone"))
    s.open["user"][0].emitted = ["old-id"]
    s.absorb("anon", "user")
    [merged] = s.open["user"]
    assert [e[1] for e in merged.events] == ["x", "y", "z"] and "anon" not in s.open
    assert "old-id" in merged.emitted
    row = summary(merged)
    assert row["device_path"] == ["phone", "laptop", "phone"] and row["switches"] == 2
    assert row["devices"] == ["phone", "laptop"] and row["entry_page"] == "/x"


def test_sessions_close_once_the_watermark_passes_end_plus_gap() -> None:
    s = Sessionizer(GAP)
    s.add("p", ev(0, "a"))
    s.add("p", ev(500, "b"))
    assert s.close_due(GAP - 1) == []
    [(owner, closed)] = s.close_due(GAP)
    assert owner == "p" and closed.events[0][1] == "a" and len(s.open["p"]) == 1


def test_summary_counts_views_conversions_and_revenue() -> None:
    s = Sessionizer(GAP)
    s.add("p", ev(0, "a"))
    s.add("p", ev(5, "b", kind="purchase", revenue=12.5))
    row = summary(s.open["p"][0])
    assert (row["events"], row["views"], row["converted"], row["revenue"]) == (2, 1, 1, 12.5)
    assert (row["channel"], row["source"], row["exit_page"]) == ("email", "news", "/b")


def test_summary_of_a_growing_session_equals_one_computed_from_scratch() -> None:
    s = Sessionizer(GAP)
    events = [
        ev(0, "a", device="phone", kind="page_view"),
        ev(5, "b", device="laptop", kind="purchase", revenue=0.1),
        ev(9, "c", device="laptop", kind="screen_view", revenue=0.2),
        [12, "d", "phone", "", "click", "", "email", "news", 0.3],  # no url, no device type
        ev(20, "e", device="tablet", kind="order_completed", revenue=1.5),
    ]
    for e in events:
        s.add("p", e)
        [session] = s.open["p"]
        assert summary(session) == summary(Session(list(session.events)))  # folded vs fresh
    row = summary(session)
    assert row["device_path"] == ["phone", "laptop", "phone", "tablet"]
    assert (row["entry_page"], row["exit_page"]) == ("/a", "/e")
    assert (row["views"], row["converted"], row["revenue"]) == (2, 1, 2.1)
