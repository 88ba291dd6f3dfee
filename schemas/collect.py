"""Input shapes of the JSON endpoints: `POST /collect` events and Segment's Tracking API.

Validated at the edge; the collector turns them into `schemas.events.Event`. Field limits
here are the documented ones (docs/collector.md): a longer value is an invalid event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from schemas.events import EpochMs, EventName, LongStr, ShortStr, SiteId

# Consent categories are compared lower-case: "Analytics" from a CMP is "analytics".
Category = Annotated[
    str,
    BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v),
    StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$"),
]
Currency = Annotated[str, StringConstraints(pattern=r"^([A-Z]{3})?$")]
Revenue = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]
VisitorId = Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{32})?$")]


class CollectEvent(BaseModel):
    """One event of `POST /collect` (the JavaScript tracker, or your own code)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: EventName = "page_view"
    site: SiteId
    url: LongStr = ""
    referrer: LongStr = ""
    title: ShortStr = ""
    user_id: ShortStr = ""
    email: ShortStr = ""
    device_id: ShortStr = ""  # app install id: the device key instead of any cookie
    visitor_id: VisitorId = ""  # the tracker's first-party cookie, for when ours is blocked
    advertising_id: ShortStr = ""
    category: ShortStr = ""
    product_id: ShortStr = ""
    campaign: ShortStr = ""
    revenue: Revenue = 0.0
    currency: Currency = ""
    locale: Annotated[str, StringConstraints(max_length=35)] = ""
    timezone: Annotated[str, StringConstraints(max_length=64)] = ""
    message_id: ShortStr = ""
    ts: EpochMs | None = None  # client clock when the event happened
    sent_at: EpochMs | None = None  # client clock when it was sent: corrects clock skew
    consent: Annotated[list[Category], Field(max_length=16)] | None = None  # None: not told
    props: dict[str, Any] = Field(default_factory=dict)


# Segment's Tracking API (https://segment.com/docs/connections/sources/catalog/libraries/
# server/http-api/): unknown fields are ignored, as Segment does, so SDKs work unchanged.
class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)


class SegmentPage(_Lenient):
    url: LongStr = ""
    referrer: LongStr = ""
    title: ShortStr = ""


class SegmentDevice(_Lenient):
    id: ShortStr = ""
    advertisingId: ShortStr = ""  # noqa: N815 - Segment's field names
    adTrackingEnabled: bool = True  # noqa: N815


class SegmentCampaign(_Lenient):
    name: ShortStr = ""
    source: ShortStr = ""
    medium: ShortStr = ""
    term: ShortStr = ""
    content: ShortStr = ""


class SegmentConsent(_Lenient):
    categoryPreferences: dict[Annotated[str, StringConstraints(max_length=64)], bool] | None = (  # noqa: N815
        None
    )


class SegmentContext(_Lenient):
    ip: Annotated[str, StringConstraints(max_length=64)] = ""
    userAgent: Annotated[str, StringConstraints(max_length=2048)] = ""  # noqa: N815
    locale: Annotated[str, StringConstraints(max_length=35)] = ""
    timezone: Annotated[str, StringConstraints(max_length=64)] = ""
    page: SegmentPage = Field(default_factory=SegmentPage)
    device: SegmentDevice = Field(default_factory=SegmentDevice)
    campaign: SegmentCampaign = Field(default_factory=SegmentCampaign)
    consent: SegmentConsent = Field(default_factory=SegmentConsent)


SegmentType = Literal["track", "page", "screen", "identify", "alias", "group"]


class SegmentMessage(_Lenient):
    type: SegmentType
    messageId: ShortStr = ""  # noqa: N815
    userId: ShortStr | None = None  # noqa: N815
    anonymousId: ShortStr | None = None  # noqa: N815
    event: ShortStr = ""  # track
    name: ShortStr = ""  # page, screen
    previousId: ShortStr = ""  # noqa: N815 - alias
    groupId: ShortStr = ""  # noqa: N815 - group
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    context: SegmentContext = Field(default_factory=SegmentContext)
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None  # noqa: N815
    sentAt: datetime | None = None  # noqa: N815
    writeKey: ShortStr = ""  # noqa: N815 - analytics.js may send it in the body
