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
    # The loser's profile becomes a tombstone: its last state, pointing at the survivor.
    assert handed.changed and handed.state["into"] == "S" and handed.state["buys"] == 1
    [(to, value)] = handed.forward
    absorb = parse_attributed(value)
    assert to == "S" and isinstance(absorb, AbsorbRecord)
    [last] = handed.output.rows["profiles"]
    assert last["merged_into"] == "S" and last["audiences"] == []
    assert [s["kind"] for s in handed.output.signals] == ["audience_exit"]
    # Redelivered after a crash (the rows may be lost, the tombstone stored): the same rows
    # and hand-over again, no signal twice, nothing changed.
    redelivered = on_merge("L", orjson.dumps(handed.state), merge.merge, CFG)
    assert not redelivered.changed and redelivered.state == handed.state
    assert redelivered.forward == handed.forward and redelivered.output.signals == []
    assert redelivered.output.rows == handed.output.rows

    survivor = on_batch(None, batch("S", ev("s1", device_id="c1")), CFG, AUD)
    combined = on_absorb(orjson.dumps(survivor.state), absorb.absorb, CFG, AUD)
    assert combined.changed and combined.state["buys"] == 1 and combined.state["aud"]
    assert combined.new_identifiers == ["cookie:c9"]
    again = on_absorb(orjson.dumps(combined.state), absorb.absorb, CFG, AUD)
    assert not again.changed and again.state["buys"] == 1 and again.output.signals == []


def test_messages_for_a_merged_person_follow_its_tombstone_to_the_survivor() -> None:
    """B was merged into C (the merge on B's partition went first), and only then does an
    absorb of A into B — forwarded from A's partition — or a re-sent batch of B arrive."""
    a = on_batch(None, batch("A", ev("a1", "purchase", device_id="ca")), CFG, AUD)
    b = on_batch(None, batch("B", ev("b1", device_id="cb")), CFG, AUD)
    b_gone = on_merge("B", orjson.dumps(b.state), parse_attributed(merge_message("B", "C")).merge,
                      CFG)  # fmt: skip
    a_gone = on_merge("A", orjson.dumps(a.state), parse_attributed(merge_message("A", "B")).merge,
                      CFG)  # fmt: skip
    [(to, late_absorb)] = a_gone.forward
    assert to == "B"
    passed = on_absorb(orjson.dumps(b_gone.state), parse_attributed(late_absorb).absorb, CFG, AUD)
    assert not passed.changed and passed.state == b_gone.state  # B stays a tombstone
    [(to, value)] = passed.forward
    absorb = parse_attributed(value)
    assert to == "C" and isinstance(absorb, AbsorbRecord) and absorb.absorb.into == "C"
    assert absorb.absorb.profile["buys"] == 1  # A's purchase reaches C

    resent = on_batch(orjson.dumps(b_gone.state), batch("B", ev("b1", device_id="cb")), CFG, AUD)
    [(to, value)] = resent.forward
    rekeyed = parse_attributed(value)
    assert to == "C" and isinstance(rekeyed, AttributedBatch) and rekeyed.person_id == "C"
    assert [e.event_id for e in rekeyed.events] == ["b1"] and not resent.changed

    d_into_c = parse_attributed(merge_message("D", "C")).merge
    early = on_merge("D", None, d_into_c, CFG)
    assert early.changed and early.state == {"pid": "D", "into": "C", "ids": {}}
    again = on_merge("D", orjson.dumps(early.state), d_into_c, CFG)
    assert not again.changed and again.forward == [] and not again.output.rows


def test_redelivered_batch_changes_nothing_but_rewrites_its_rows() -> None:
    event = ev("e1", "purchase", device_id="c1", user_id="u1")
    first = on_batch(None, batch("P", event), CFG, AUD)
    again = on_batch(orjson.dumps(first.state), batch("P", event), CFG, AUD)
    assert not again.changed and again.applied == 0 and again.output.signals == []
    assert again.output.rows["profiles"] == first.output.rows["profiles"]
    assert again.output.rows["lifecycle_moments"] == first.output.rows["lifecycle_moments"]
    # The identifier index updates went out with the first delivery's commit, which a crash
    # may have prevented: a redelivery sends them again.
    assert first.new_identifiers and again.new_identifiers == first.new_identifiers


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
