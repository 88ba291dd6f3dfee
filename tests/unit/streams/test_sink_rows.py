from __future__ import annotations

import orjson
import pytest

from schemas.events import Event
from streams.sink import BadEventError, parse_event


def test_an_event_on_the_wire_has_the_shapes_clickhouse_reads() -> None:
    event = Event(
        event_id="e1",
        event_type="purchase",
        site_id="shop",
        device_id="d1",
        device_kind="cookie",
        ts_ms=1_764_000_000_999,
        received_ms=1_764_000_001_500,
        revenue=12.5,
        props={"coupon": "X"},
        is_bot=True,
    )
    wire = orjson.dumps(event.model_dump())
    parsed = parse_event(wire)
    assert parsed["props"] == '{"coupon":"X"}' and parsed["is_bot"] == 1
    assert Event.model_validate(parsed) == event  # and back again


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[1,2]",
        b'{"event_id": "x"}',
        None,
        b'{"event_id":"e","event_type":"t","site_id":"s","device_id":"d","ts_ms":"soon",'
        b'"received_ms":1}',
    ],
)
def test_records_that_cannot_be_rows_are_rejected(value: bytes | None) -> None:
    with pytest.raises(BadEventError):
        parse_event(value)
