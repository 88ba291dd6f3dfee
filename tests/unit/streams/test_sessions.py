"""Sessions in event time: gap splits, out-of-order inserts, merges, closing, switches."""

from __future__ import annotations

from streams.sessions import Sessionizer, summary

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
