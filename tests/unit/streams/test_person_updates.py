"""One message's effect on a person, without Kafka: the merge hand-over protocol and parsing."""

from __future__ import annotations

import orjson
import pytest

from schemas.signals import (
    AbsorbRecord,
    AttributedBatch,
    BadAttributedMessageError,
    MergeRecord,
    batch_message,
    merge_message,
    parse_attributed,
)
from streams.audiences import parse_audiences
from streams.person_updates import load_url_categories, on_absorb, on_batch, on_merge
from streams.profiles import SignalsConfig

CFG = SignalsConfig(required_consent="")
AUD = parse_audiences("[audience.buyers]\nrule = 'purchases >= 1'", CFG)


def ev(eid: str, kind: str = "page_view", **f: object) -> dict:
    return {"event_id": eid, "event_type": kind, "ts_ms": 1_764_000_000_000, **f}


def batch(person: str, *events: dict) -> AttributedBatch:
    message = parse_attributed(batch_message(person, list(events)))
    assert isinstance(message, AttributedBatch)
    return message


def test_merge_is_handed_from_the_loser_to_the_survivor_once() -> None:
    loser = on_batch(None, batch("L", ev("l1", "purchase", revenue=5.0, device_id="c9")), CFG, AUD)
    assert loser.state is not None and loser.state["aud"] and loser.applied == 1
    assert loser.new_identifiers == ["cookie:c9"]
    merge = parse_attributed(merge_message("L", "S"))
    assert isinstance(merge, MergeRecord)

    rekeyed = on_merge("S", None, merge.merge, CFG)  # arrived keyed by the survivor
    assert rekeyed.forward == [("L", merge_message("L", "S"))] and not rekeyed.changed

    handed = on_merge("L", orjson.dumps(loser.state), merge.merge, CFG)
    assert handed.state is None and handed.changed  # the loser's state is deleted
    [(to, value)] = handed.forward
    absorb = parse_attributed(value)
    assert to == "S" and isinstance(absorb, AbsorbRecord)
    [last] = handed.output.rows["profiles"]
    assert last["merged_into"] == "S" and last["audiences"] == []
    assert [s["kind"] for s in handed.output.signals] == ["audience_exit"]
    assert on_merge("L", None, merge.merge, CFG).forward == []  # already handed over

    survivor = on_batch(None, batch("S", ev("s1", device_id="c1")), CFG, AUD)
    combined = on_absorb(orjson.dumps(survivor.state), absorb.absorb, CFG, AUD)
    assert combined.changed and combined.state["buys"] == 1 and combined.state["aud"]
    assert combined.new_identifiers == ["cookie:c9"]
    again = on_absorb(orjson.dumps(combined.state), absorb.absorb, CFG, AUD)
    assert not again.changed and again.state["buys"] == 1 and again.output.signals == []


def test_redelivered_batch_changes_nothing_but_rewrites_its_rows() -> None:
    first = on_batch(None, batch("P", ev("e1", "purchase")), CFG, AUD)
    again = on_batch(orjson.dumps(first.state), batch("P", ev("e1", "purchase")), CFG, AUD)
    assert not again.changed and again.applied == 0 and again.output.signals == []
    assert again.output.rows["profiles"] == first.output.rows["profiles"]
    assert again.output.rows["lifecycle_moments"] == first.output.rows["lifecycle_moments"]


@pytest.mark.parametrize(
    "value",
    [
        b"{nope",
        b"[1]",
        b'{"person_id": "P"}',
        b'{"person_id": "", "events": []}',
        b'{"merge": {"from": "A"}}',
        b'{"person_id": "P", "events": [{"event_id": "e", "event_type": "x"}]}',
        b'{"person_id": "P", "events": [], "extra": 1}',
    ],
)
def test_malformed_attributed_messages_are_refused(value: bytes) -> None:
    with pytest.raises(BadAttributedMessageError):
        parse_attributed(value)


def test_url_category_file(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[url]]\npattern = "*/shoes/*"\ncategory = "shoes"\n')
    assert load_url_categories(path) == (("*/shoes/*", "shoes"),)
    path.write_text('[[url]]\npattern = "*/shoes/*"\n')
    with pytest.raises(ValueError, match="#1 needs exactly pattern and category"):
        load_url_categories(path)
