"""Loading the stage's state after a crash half-way through writing a flush."""

from __future__ import annotations

import orjson

from streams.batcher import compact
from streams.engine import Engine
from streams.stitching import engine_from_state
from trackpipe.identity_traffic import generate


def snapshot(engine: Engine) -> tuple:
    return (
        engine.graph.owner,
        {k: [s.events for s in v] for k, v in engine.people.open.items()},
        {k: [s.events for s in v] for k, v in engine.devices.open.items()},
        orjson.loads(orjson.dumps(engine.meta())),
    )


def test_a_partially_written_flush_is_completed_from_the_wal_record() -> None:
    events = [compact(i, orjson.dumps(e)) for i, e in enumerate(generate(40))]
    engine = Engine(1, 30 * 60_000, 10 * 60_000)
    table: dict[bytes, bytes] = {}
    engine.apply(0, events[: len(events) // 2])
    for key, record in engine.flush(1).state.items():  # flush 1, fully written
        if record is not None:
            table[key.encode()] = orjson.dumps(record)
    engine.apply(0, events[len(events) // 2 :])
    second = engine.flush(2).state
    table[b"wal"] = orjson.dumps(second)
    for key, record in list(second.items())[: len(second) // 3]:  # killed a third of the way
        if record is None:
            table.pop(key.encode(), None)
        else:
            table[key.encode()] = orjson.dumps(record)
    assert any(key.encode() not in table for key in second)  # really half-written
    restored = engine_from_state(Engine(1, 30 * 60_000, 10 * 60_000), table.items())
    assert restored.version == 2
    assert snapshot(restored) == snapshot(engine)
