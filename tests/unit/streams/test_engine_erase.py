"""Engine.erase: an erased person leaves nothing in memory, in the state records or in rows."""

from __future__ import annotations

from typing import Any

import orjson

from streams.batcher import compact
from streams.engine import Engine
from streams.identity import person_id_for

GAP = 30 * 60_000
LATENESS = 10 * 60_000
T0 = 1_764_000_000_000


def event(n: int, ts: int, device: str, kind: str = "cookie", **ids: str) -> list[Any]:
    e = {
        "event_id": f"e{n}",
        "ts_ms": ts,
        "device_id": device,
        "device_kind": kind,
        "event_type": "page_view",
        "url": "https://shop/",
        "device_type": "mobile" if kind == "app" else "desktop",
    } | ids
    row = compact(n, orjson.dumps(e))
    assert row is not None
    return row


def stitched() -> tuple[Engine, list[list[Any]]]:
    """P: cookie c1 and app a1 linked by logins as u1; Q: cookie c9 alone. Links applied."""
    engine = Engine(1, GAP, LATENESS)
    events = [
        event(0, T0, "c1"),
        event(1, T0 + 1_000, "c1", user_id="u1"),
        event(2, T0 + 2_000, "a1", "app", user_id="u1", advertising_id="ad1"),
        event(3, T0 + 3_000, "c9"),
        # Moves the watermark past the links (not past the sessions' close).
        event(4, T0 + LATENESS + 60_000, "c9"),
    ]
    engine.apply(0, events)
    return engine, events


P = person_id_for("user:u1")
P_KEYS = {"cookie:c1", "app:a1", "user:u1", "adid:ad1"}


def test_erase_forgets_the_person_their_sessions_and_their_devices() -> None:
    engine, _ = stitched()
    first = engine.flush(1)
    assert first.state[f"p:{P}"] is not None and engine.graph.owner["cookie:c1"] == P
    assert engine.erase(["user:u1"]) == [P]
    assert not P_KEYS & set(engine.graph.owner) and P not in engine.graph.persons
    assert P not in engine.people.open
    assert "c1" not in engine.devices.open and "a1" not in engine.devices.open
    out = engine.flush(2)
    assert out.state[f"p:{P}"] is None
    assert out.state["d:c1"] is None and out.state["d:a1"] is None
    assert not out.sessions and not out.device_sessions and not out.identities
    # The writer deletes their rows once more, for rows written meanwhile.
    assert out.erased_persons == [P] and out.erased_devices == ["a1", "c1"]
    assert set(out.erased_ids) == P_KEYS
    # Q is untouched.
    q = person_id_for("cookie:c9")
    assert engine.graph.owner["cookie:c9"] == q and q in engine.people.open
    assert engine.counters.erased == 1


def test_rows_produced_before_the_erase_are_not_written() -> None:
    engine, _ = stitched()  # not flushed: identities and open sessions are pending
    engine.erase(["cookie:c1"])  # by any of the person's identifiers
    out = engine.flush(1)
    assert all(r["person_id"] != P for r in out.sessions)
    assert {r["device_id"] for r in out.device_sessions} == {"c9"}
    assert {r["id_value"] for r in out.identities} == {"c9"}
    assert not [c for c in out.changes if P in (c.get("loser"), c.get("survivor"))]


def test_pending_links_of_the_erased_identifiers_are_dropped() -> None:
    engine = Engine(1, GAP, LATENESS)
    engine.apply(0, [event(0, T0, "c1", user_id="u1"), event(1, T0 + 1, "c2", user_id="u2")])
    assert len(engine.graph.pending) == 2  # the watermark has not passed the links yet
    engine.erase(["cookie:c1", "user:u1"])
    assert [(a, b) for _, a, b in engine.graph.pending] == [("cookie:c2", "user:u2")]
    engine.apply(0, [event(2, T0 + LATENESS + GAP + 10, "c3")])  # links and closes due
    out = engine.flush(1)
    assert engine.counters.merges == 1
    assert not {"cookie:c1", "user:u1"} & set(engine.graph.owner)
    assert all("c1" not in r["devices"] for r in out.sessions)
    assert "meta" in out.state and not engine.graph.pending


def test_erasing_an_unknown_identifier_is_a_no_op() -> None:
    engine, _ = stitched()
    engine.flush(1)
    before = (dict(engine.graph.owner), set(engine.people.open), set(engine.devices.open))
    assert engine.erase(["user:nobody", "email:0000"]) == []
    assert (dict(engine.graph.owner), set(engine.people.open), set(engine.devices.open)) == before
    out = engine.flush(2)
    assert set(out.state) == {"meta"} and not out.erased_persons and not out.erased_devices


def test_a_restored_engine_holds_nothing_of_the_erased_person() -> None:
    engine, _ = stitched()
    table: dict[str, Any] = {}
    for version in (1, 2):
        if version == 2:
            engine.erase(["user:u1"])
        for key, record in engine.flush(version).state.items():
            if record is None:
                table.pop(key, None)
            else:
                table[key] = orjson.loads(orjson.dumps(record))
    assert not [k for k in table if P in k or k in ("d:c1", "d:a1")]
    restored = Engine(1, GAP, LATENESS)
    for key, record in table.items():
        restored.load(key, record)
    assert not P_KEYS & set(restored.graph.owner)
    assert not {"c1", "a1"} & set(restored.devices.open) and P not in restored.people.open
    assert "u1" not in orjson.dumps(table).decode()


def test_the_erase_command_names_the_stage_types_and_the_suppression_keys() -> None:
    from trackpipe.erasure import Identifier
    from trackpipe.erasure_publish import erase_command

    ids = [Identifier("device", "c1"), Identifier("user", "u1"), Identifier("advertising", "x")]
    command = orjson.loads(erase_command(ids))
    assert command["p"] == -1
    assert command["erase"] == ["adid:x", "app:c1", "cookie:c1", "user:u1"]
    assert command["suppress"] == sorted(i.suppression_key for i in ids)


def test_the_batcher_leaves_out_events_the_suppression_list_blocks() -> None:
    from streams.batcher import pack
    from trackpipe.suppression import SuppressionList, suppression_key

    suppressions = SuppressionList("unused:9092", "unused")
    suppressions.add([suppression_key("user", "u1")])
    records = [
        (0, orjson.dumps({"event_id": "a", "ts_ms": T0, "device_id": "c1", "user_id": "u1"})),
        (1, orjson.dumps({"event_id": "b", "ts_ms": T0, "device_id": "c2"})),
    ]
    batch = orjson.loads(pack(3, records, suppressions.blocks))
    assert [e[1] for e in batch["e"]] == ["b"] and batch["last"] == 1
