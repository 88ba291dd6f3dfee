"""Messages of the signals stage: person-attributed events in, audience and lifecycle signals out.

The attributed topic (`TRACKPIPE_TOPIC_ATTRIBUTED`) is the contract between identity
stitching and the signals stage. Its key is the person_id as UTF-8 bytes, partitioned with
Kafka's default (murmur2) partitioner, and its value one orjson object of one of these shapes:

- `AttributedBatch`: several events of one person (keyed by that person). Several events per
  message let the stage pay faust's per-message cost once per batch, not per event.
- `MergeRecord`: person `from` was merged into person `into`. Key it by `from` (the loser):
  the loser's state lives on that key's partition. A merge keyed by `into` also works: the
  stage re-keys it, at the cost of one more hop.
- `AbsorbRecord`: internal to the stage (keyed by `into`): the loser's state on its way to
  the survivor. Producers other than the stage never write it.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Interest weight per event type (view < click < add-to-cart < purchase); other types add
# none. The default of both the settings and the stage's own config.
INTEREST_WEIGHTS: dict[str, float] = {
    "page_view": 1.0,
    "product_view": 1.0,
    "click": 2.0,
    "email_click": 2.0,
    "add_to_cart": 4.0,
    "purchase": 8.0,
}


class AttributedEvent(BaseModel):
    """The fields of an accepted event the signals stage reads (see `schemas.events.Event`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str = Field(min_length=1, max_length=256)
    ts_ms: int = Field(ge=0)
    event_type: str
    site_id: str = ""
    device_id: str = ""
    device_kind: str = ""  # cookie | app
    device_type: str = ""  # desktop | mobile | tablet | bot | other
    channel: str = ""
    category: str = ""
    product_id: str = ""
    revenue: float = Field(0.0, ge=0, le=1e9, allow_inf_nan=False)
    currency: str = ""
    campaign: str = ""
    email_hash: str = ""
    user_id: str = ""
    advertising_id: str = ""
    timezone: str = ""
    consent: list[str] = Field(default_factory=list)
    is_bot: bool = False
    url: str = ""


class AttributedBatch(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    person_id: str = Field(min_length=1, max_length=128)
    events: list[AttributedEvent] = Field(max_length=10_000)


class Merge(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from", min_length=1, max_length=128)
    into: str = Field(min_length=1, max_length=128)


class MergeRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    merge: Merge


class Absorb(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from")
    into: str
    profile: dict[str, Any]


class AbsorbRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    absorb: Absorb


AttributedMessage = AttributedBatch | MergeRecord | AbsorbRecord


class BadAttributedMessageError(ValueError):
    """A record on the attributed topic that is none of the three shapes."""


def parse_attributed(value: bytes | None) -> AttributedMessage:
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise BadAttributedMessageError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadAttributedMessageError("not a JSON object")
    kind = MergeRecord if "merge" in data else AbsorbRecord if "absorb" in data else AttributedBatch
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise BadAttributedMessageError(f"{kind.__name__}: {exc}") from exc


def batch_message(person_id: str, events: list[dict[str, Any]]) -> bytes:
    """How a producer writes a batch (tests and the stitching stage)."""
    return orjson.dumps({"person_id": person_id, "events": events})


def merge_message(loser: str, survivor: str) -> bytes:
    return orjson.dumps({"merge": {"from": loser, "into": survivor}})


class SignalRecord(BaseModel):
    """One message on the signals topic (`TRACKPIPE_TOPIC_SIGNALS`), keyed by person_id.

    kind: `audience_enter` / `audience_exit` (with `audience`), or `lifecycle` (with `stage`
    and `previous`): the key moments campaigns trigger on. `at_ms` is event time.
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    person_id: str
    at_ms: int
    audience: str = ""
    stage: str = ""
    previous: str = ""
    identifiers: dict[str, list[str]] = Field(default_factory=dict)
