"""Every message trackpipe moves: beacons as received, events on Kafka, dead letters."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_serializer,
    field_validator,
)

ShortStr = Annotated[str, StringConstraints(max_length=256)]
LongStr = Annotated[str, StringConstraints(max_length=4096)]
EventName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
SiteId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]

# Epoch milliseconds between 2000-01-01 and 2100-01-01: anything else is a broken clock.
EpochMs = Annotated[int, Field(ge=946_684_800_000, le=4_102_444_800_000)]


class PixelBeacon(BaseModel):
    """The query string of `GET /i`, as sent by a page, an app or an e-mail.

    Short parameter names keep pixel URLs small; see README "Pixel parameters".
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    e: EventName = "page_view"
    s: SiteId
    u: LongStr = ""
    r: LongStr = ""
    uid: ShortStr = ""
    em: ShortStr = ""
    did: ShortStr = ""
    cat: ShortStr = ""
    pid: ShortStr = ""
    rev: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)] = 0.0
    cur: Annotated[str, StringConstraints(pattern=r"^([A-Z]{3})?$")] = ""
    cmp: ShortStr = ""
    ts: EpochMs | None = None
    aid: ShortStr = ""  # advertising id (IDFA/AAID): kept only with advertising consent
    # Granted consent categories, comma-separated ("analytics,advertising"); absent: not told.
    cs: (
        Annotated[
            str,
            BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v),
            StringConstraints(pattern=r"^[a-z0-9_,]{0,256}$"),
        ]
        | None
    ) = None


class Event(BaseModel):
    """An accepted event, as produced to the raw topic (orjson) and stored in `events`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str
    event_type: str
    site_id: str
    device_id: str
    device_kind: str  # "cookie" (browser) or "app"
    user_id: str = ""
    email_hash: str = ""
    ts_ms: int  # event time as the client saw it (epoch ms), or arrival when not given
    received_ms: int
    url: str = ""
    referrer: str = ""
    category: str = ""
    product_id: str = ""
    revenue: float = 0.0
    currency: str = ""
    campaign: str = ""
    ip: str = ""
    user_agent: str = ""
    props: dict[str, Any] = Field(default_factory=dict)
    # Where it came from and how: filled by the collector's endpoints and enrichment.
    source: str = "pixel"  # pixel | collect | segment | email | import
    message_id: str = ""  # the client's own id (Segment messageId), kept for de-duplication
    advertising_id: str = ""  # only with advertising consent
    page_title: str = ""
    locale: str = ""
    timezone: str = ""  # IANA name, when the client tells it
    channel: str = ""  # email | paid_search | organic_search | social | display | referral | direct
    utm_source: str = ""
    utm_medium: str = ""
    utm_term: str = ""
    utm_content: str = ""
    device_type: str = ""  # desktop | mobile | tablet | bot | other
    os: str = ""
    browser: str = ""
    is_bot: bool = False
    consent: list[str] = Field(default_factory=list)  # granted categories

    # On the wire (and so in ClickHouse, which ingests the raw JSON lines) props is a JSON
    # string and is_bot a number: the shapes ClickHouse 18.16's JSONEachRow reads.
    @field_serializer("props")
    def _props_as_json(self, props: dict[str, Any]) -> str:
        return orjson.dumps(props).decode()

    @field_serializer("is_bot")
    def _bot_as_number(self, is_bot: bool) -> int:
        return int(is_bot)

    @field_validator("props", mode="before")
    @classmethod
    def _props_from_json(cls, value: Any) -> Any:
        return orjson.loads(value) if isinstance(value, str | bytes) else value


class DeadLetter(BaseModel):
    """What could not be accepted, with why; the raw payload is truncated and PII-redacted."""

    model_config = ConfigDict(frozen=True)

    reason: str
    detail: str
    source: str
    received_ms: int
    raw: str
