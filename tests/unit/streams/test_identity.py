"""The identity graph's rules: junk values, per-type limits, person_id, event-time order."""

from __future__ import annotations

import uuid

import pytest

from streams.identity import (
    NAMESPACE,
    IdentityGraph,
    Merge,
    Refusal,
    is_junk,
    person_id_for,
    uuid5_text,
)


@pytest.mark.parametrize("value", ["", " ", "undefined", "NULL", "'null'", '"None"', "0", "-1",
                                   "000-0", "[object Object]", "Anonymous", "NaN"])  # fmt: skip
def test_junk_values_are_refused(value: str) -> None:
    assert is_junk(value)


@pytest.mark.parametrize("value", ["user-1", "a1b2", "10", "nullable"])
def test_real_values_pass(value: str) -> None:
    assert not is_junk(value)


def test_configured_blocklist_adds_values() -> None:
    assert is_junk("Test-User", frozenset({"test-user"})) and not is_junk("Test-User")


def link(graph: IdentityGraph, a: str, b: str, ts: int) -> Merge | Refusal | None:
    graph.observe(a, ts)
    graph.observe(b, ts)
    graph.propose(a, b, ts)
    return graph.apply_next()


def test_person_id_is_that_of_the_highest_priority_identifier() -> None:
    g = IdentityGraph()
    link(g, "cookie:c1", "email:e1", 1)
    result = link(g, "cookie:c1", "user:u1", 2)
    assert isinstance(result, Merge) and result.survivor == person_id_for("user:u1")
    assert {g.owner[k] for k in ("cookie:c1", "email:e1", "user:u1")} == {person_id_for("user:u1")}


def test_priority_is_configurable() -> None:
    g = IdentityGraph(priority=["cookie", "user"])
    link(g, "cookie:c1", "user:u1", 1)
    assert g.owner["user:u1"] == person_id_for("cookie:c1")


def test_a_shared_device_cannot_fuse_two_users() -> None:
    g = IdentityGraph(limits={"user": 1})
    assert isinstance(link(g, "cookie:kiosk", "user:a", 1), Merge)
    refused = link(g, "cookie:kiosk", "user:b", 2)
    assert isinstance(refused, Refusal) and "user limit 1" in refused.reason
    assert g.owner["user:b"] != g.owner["user:a"]


def test_links_apply_in_event_time_order_not_arrival_order() -> None:
    g = IdentityGraph(limits={"user": 1})
    for key in ("cookie:k", "user:late", "user:early"):
        g.observe(key, 1)
    g.propose("cookie:k", "user:late", 20)  # arrives first
    g.propose("cookie:k", "user:early", 10)
    assert isinstance(g.apply_next(), Merge) and isinstance(g.apply_next(), Refusal)
    assert g.owner["cookie:k"] == g.owner["user:early"]


def test_a_pair_seen_twice_applies_at_its_earliest_sighting_whatever_the_arrival() -> None:
    g = IdentityGraph(limits={"user": 1})
    for key in ("cookie:k", "user:a", "user:b"):
        g.observe(key, 1)
    g.propose("cookie:k", "user:a", 30)  # the later sighting of this pair arrives first
    g.propose("cookie:k", "user:b", 20)
    g.propose("cookie:k", "user:a", 10)  # its earlier sighting decides
    assert g.next_link_ts() == 10
    assert isinstance(g.apply_next(), Merge) and isinstance(g.apply_next(), Refusal)
    assert g.owner["cookie:k"] == g.owner["user:a"] and g.next_link_ts() is None
    assert g.pending_state() == []


def test_first_and_last_seen_follow_event_time() -> None:
    g = IdentityGraph()
    for ts in (50, 10, 30):
        pid = g.observe("cookie:c", ts)
    assert g.persons[pid].members["cookie:c"] == [10, 50]


def test_uuid5_text_equals_the_standard_uuid5() -> None:
    names = ["", "user:u1", "session:e-1", "cookie:é€😀", "email:" + "ab" * 40]
    assert [uuid5_text(n) for n in names] == [str(uuid.uuid5(NAMESPACE, n)) for n in names]
