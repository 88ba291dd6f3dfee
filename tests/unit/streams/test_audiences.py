"""The rule language and audience files: semantics, and clean rejection of bad or hostile input."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.audiences import (
    AudienceFileError,
    leave_all,
    load_audiences,
    memberships,
    parse_audiences,
    reconcile,
)
from streams.profiles import DAY_MS, SignalsConfig, apply_events, new_profile
from streams.rules import RuleError, compile_rule

T0 = 1_764_000_000_000
CFG = SignalsConfig(required_consent="")
_n = iter(range(10**9))


def ev(event_type: str, day: float, **fields: object) -> dict[str, object]:
    return {
        "event_id": f"e{next(_n)}",
        "event_type": event_type,
        "ts_ms": int(T0 + day * DAY_MS),
        "device_id": "c1",
        **fields,
    }


def person(*events: dict[str, object]) -> dict:
    p = new_profile("p")
    apply_events(p, list(events), CFG)
    return p


def holds(rule: str, p: dict, now_day: float = 6) -> bool:
    return bool(compile_rule(rule, CFG)(p, int(T0 + now_day * DAY_MS)))


VIEWED_NO_PURCHASE = 'count(type="page_view", category="shoes", days=7) >= 3 and purchases == 0'


def test_viewed_category_three_times_in_seven_days_and_no_purchase() -> None:
    three = person(*(ev("page_view", d, category="shoes") for d in (0, 3, 6)))
    assert holds(VIEWED_NO_PURCHASE, three)
    assert not holds(VIEWED_NO_PURCHASE, three, now_day=7)  # day 0 left the window
    two = person(*(ev("page_view", d, category="shoes") for d in (3, 6)))
    assert not holds(VIEWED_NO_PURCHASE, two)
    buyer = person(*(ev("page_view", d, category="shoes") for d in (0, 3, 6)), ev("purchase", 6))
    assert not holds(VIEWED_NO_PURCHASE, buyer)


def test_operators_precedence_and_functions() -> None:
    p = person(
        ev("purchase", 0, revenue=120.0, channel="email", device_type="mobile", user_id="u"),
        ev("page_view", 1, category="hats", channel="social", device_type="mobile"),
        ev("email_sent", 5),
        ev("email_sent", 6),
    )
    assert holds("true or false and false", p)  # and binds tighter
    assert not holds("(true or false) and false", p)
    assert holds('not lifecycle == "repeat_buyer" and lifecycle == "first_purchase"', p)
    assert holds("revenue >= 100 and rfm_m == 2 and recency_days == 6", p)
    assert holds('channel_share("email") == 0.5 and device_share(device="mobile") == 1', p)
    assert holds('top_interest("hats", 1) and interest("hats") > 0.5', p)
    assert holds("contacts(days=2) == 2 and contacts(7) == 2", p)
    assert holds('has("user") and identified and not has("email")', p)
    assert holds("days_since_seen == 5", p)


@pytest.mark.parametrize(
    ("rule", "position", "reason"),
    [
        ("purchases >", 12, "expected a value, found end of rule"),
        ("purchase == 0", 1, "unknown name 'purchase'"),
        ('exec("rm -rf /")', 1, "unknown function 'exec'"),
        ("__import__('os')", 12, 'unexpected character "\'"'),  # only double quotes
        ("count(days=7)", 1, "expected a condition, found a number"),
        ('revenue == "lots"', 9, "cannot compare a number with a string"),
        ('lifecycle > "a"', 11, "'>' needs numbers"),
        ("count(days=99) > 1", 1, "days must be a whole number from 1 to 30"),
        ("count(days=1.5) > 1", 1, "days must be a whole number"),
        ("count(days=7, days=6) > 1", 15, "days given twice"),
        ("count(days=purchases) > 1", 12, "arguments must be numbers or strings"),
        ("count(weeks=1) > 0", 7, "count() has no parameter weeks"),
        ("revenue > 1" + "0" * 30, 11, "larger than"),
        ("revenue > 10000000000000", 11, "larger than"),
        ("purchases == 0; drop table", 15, "unexpected character ';'"),
        ("lifecycle.__class__", 10, "unexpected character '.'"),
        ('"' + "x" * 300 + '" == lifecycle', 1, "string longer than 256"),
        ("purchases == 0 purchases", 16, "expected end"),
    ],
)
def test_bad_rules_are_rejected_with_the_position(rule: str, position: int, reason: str) -> None:
    with pytest.raises(RuleError) as caught:
        compile_rule(rule, CFG)
    assert caught.value.position == position
    assert reason in caught.value.reason


def test_hostile_sizes_are_rejected_without_recursion_errors() -> None:
    with pytest.raises(RuleError, match="longer than 2000"):
        compile_rule("(" * 5000 + "true" + ")" * 5000, CFG)
    for rule in ("(" * 190 + "true" + ")" * 190, "not " * 300 + "true"):
        with pytest.raises(RuleError, match="nested deeper than 20"):
            compile_rule(rule, CFG)
    with pytest.raises(RuleError, match="nested deeper than 20"):
        compile_rule("(" * 21 + "true" + ")" * 21, CFG)
    assert compile_rule("(" * 20 + "true" + ")" * 20, CFG)(new_profile("p"), T0)
    with pytest.raises(RuleError, match="more than 400 tokens"):
        compile_rule(" or ".join(["x"] * 250), CFG)


GOOD = """
[audience.shoe_browsers]
description = "viewed shoes 3+ times this week, no purchase"
rule = 'count(type="page_view", category="shoes", days=7) >= 3 and purchases == 0'

[audience.buyers]
rule = 'purchases >= 1 and contacts(days=7) < 3'
"""


def test_audience_file_enter_and_exit() -> None:
    audiences = parse_audiences(GOOD, CFG)
    p = person(*(ev("page_view", d, category="shoes") for d in (0, 3, 6)))
    now = int(T0 + 6 * DAY_MS)
    changes = reconcile(p, now, audiences, CFG)
    assert [(c.audience, c.entered) for c in changes] == [("shoe_browsers", True)]
    assert reconcile(p, now, audiences, CFG) == []
    apply_events(p, [ev("purchase", 6)], CFG)
    changes = reconcile(p, now, audiences, CFG)
    assert [(c.audience, c.entered, c.entered_at_ms) for c in changes] == [
        ("shoe_browsers", False, now),
        ("buyers", True, now),
    ]
    assert [c.audience for c in leave_all(p, now)] == ["buyers"] and p["aud"] == {}


def test_persons_without_consent_or_opted_out_are_in_no_audience() -> None:
    strict = SignalsConfig()  # requires the "marketing" grant
    audiences = parse_audiences('[audience.all]\nrule = "true"', strict)
    p = new_profile("p")
    apply_events(p, [ev("page_view", 0)], strict)
    assert memberships(p, T0, audiences, strict) == set()
    apply_events(p, [ev("page_view", 1, consent=["marketing"])], strict)
    assert memberships(p, T0, audiences, strict) == {"all"}
    apply_events(p, [ev("opt_out", 2)], strict)
    changes = reconcile(p, T0, audiences, strict)
    assert memberships(p, T0, audiences, strict) == set() and changes == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[audience.x]\nrule = 'purchases >'", "audience 'x': rule position 12: expected a value"),
        ("[audience.x]\nrule = 'evil()'", "audience 'x': rule position 1: unknown function 'evil'"),
        ("[audience.X]\nrule = 'true'", "audience 'X': names are"),
        ("[audience.x]\nrules = 'true'", "audience 'x': needs rule"),
        ("[audience.x]\nrule = 'true'\nowner = 1", "audience 'x': unknown keys ['owner']"),
        ("[audience.x]\nrule = 1", "audience 'x': needs rule"),
        ("[audiences.x]\nrule = 'true'", "unknown top-level keys ['audiences']"),
        ("[audience.x\nrule = 'true'", "not valid TOML"),
        ("audience = 3", "must be a table"),
        ("".join(f"[audience.a{i}]\nrule='true'\n" for i in range(201)), "more than 200"),
    ],
)
def test_bad_audience_files_are_rejected_naming_the_audience(text: str, message: str) -> None:
    with pytest.raises(AudienceFileError) as caught:
        parse_audiences(text, CFG, "aud.toml")
    assert str(caught.value).startswith("aud.toml: ") and message in str(caught.value)


def test_audience_files_are_read_from_disk_with_limits(tmp_path: Path) -> None:
    path = tmp_path / "aud.toml"
    path.write_text(GOOD)
    assert [a.name for a in load_audiences(path, CFG)] == ["shoe_browsers", "buyers"]
    path.write_text("#" * 300_000)
    with pytest.raises(AudienceFileError, match="larger than"):
        load_audiences(path, CFG)
    with pytest.raises(AudienceFileError, match="cannot read"):
        load_audiences(tmp_path / "missing.toml", CFG)
    assert load_audiences(None, CFG) == []
