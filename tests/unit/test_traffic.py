from __future__ import annotations

from collections import defaultdict
from urllib.parse import parse_qs

from trackpipe.traffic import generate


def test_generator_is_deterministic() -> None:
    assert list(generate(20, seed=3)) == list(generate(20, seed=3))
    assert list(generate(20, seed=3)) != list(generate(20, seed=4))


def test_traffic_has_people_with_several_devices_logins_mail_and_purchases() -> None:
    beacons = list(generate(200, seed=1))
    devices: dict[str, set[str]] = defaultdict(set)
    kinds = set()
    for b in beacons:
        devices[b.device.split("-")[0]].add(b.device)
        kinds.add(parse_qs(b.query)["e"][0])
    assert sum(len(d) > 1 for d in devices.values()) > 50
    assert {
        "page_view",
        "screen_view",
        "login",
        "email_open",
        "email_click",
        "purchase",
        "add_to_cart",
    } <= kinds


def test_malformed_beacons_are_mixed_in_on_request() -> None:
    clean = list(generate(50, seed=2))
    dirty = list(generate(50, seed=2, malformed_every=10))
    assert len(dirty) == len(clean) + len(clean) // 10


def test_every_beacon_states_consent_and_some_people_decline_marketing() -> None:
    by_person: dict[str, set[str]] = defaultdict(set)
    for b in generate(40, seed=5):
        by_person[b.device.split("-")[0]].add(parse_qs(b.query)["cs"][0])
    assert all(len(stated) == 1 for stated in by_person.values())  # one answer per person
    answers = [stated.pop() for stated in by_person.values()]
    assert answers.count("analytics") == 10  # every fourth of the 40
    assert answers.count("analytics,marketing") == 30
