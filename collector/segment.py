"""Segment's HTTP Tracking API, so Segment and RudderStack SDKs work unchanged.

`POST /v1/{track,page,screen,identify,alias,group,batch}` with the write key as the HTTP Basic
user name (or `writeKey` in the body, as analytics.js may send). Each configured write key
maps to a site id; keys are compared in constant time. Timestamps follow Segment: the event
time is the client's timestamp corrected by (receivedAt - sentAt) for the client's clock skew.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from collector.bodies import BodyError, as_batch, count_items, decode_body, item_too_large
from collector.edge import context_for, cors_headers, json_error, json_response, preflight
from collector.http import Request, Response
from collector.metrics import Metrics
from collector.privacy import hash_email, redact_json
from collector.service import CollectorService, Context, Tally, describe, event_time, now_ms
from collector.sinks.base import EventSink
from schemas.collect import SegmentMessage
from trackpipe.settings import Settings

TYPES = ("track", "page", "screen", "identify", "alias", "group")
# Segment's e-commerce spec names, mapped to the event types the pipeline already knows.
_SPEC_EVENTS = {
    "order completed": "purchase",
    "product added": "add_to_cart",
    "product viewed": "product_view",
    "signed in": "login",
    "signed up": "signup",
}
_NOT_NAME = re.compile(r"[^a-z0-9]+")
_DATETIME = TypeAdapter(datetime)


class SegmentRoutes:
    def __init__(
        self, settings: Settings, service: CollectorService, sink: EventSink, metrics: Metrics
    ) -> None:
        self._settings = settings
        self._service = service
        self._sink = sink
        self._metrics = metrics
        self._keys = [
            (k.get_secret_value().encode(), site) for site, k in settings.segment_write_keys.items()
        ]

    def table(self) -> dict[tuple[str, str], Any]:
        paths: dict[str, str | None] = {f"/v1/{t}": t for t in TYPES} | {"/v1/batch": None}
        # analytics.js (browser) posts to the one-letter paths, /v1/b when batching.
        paths |= {f"/v1/{t[0]}": t for t in TYPES} | {"/v1/b": None}
        routes = {("POST", path): self._handler(kind) for path, kind in paths.items()}
        routes |= {("OPTIONS", path): self.preflight for path in paths}
        return routes

    def preflight(self, request: Request) -> Response:
        return preflight(self._settings, request)

    def _handler(self, forced_type: str | None) -> Any:
        return lambda request: self.handle(request, forced_type)

    def handle(self, request: Request, forced_type: str | None) -> Response:
        # A browser SDK's fetch fails without CORS headers, and then it retries forever.
        cors = cors_headers(self._settings, request)
        if not getattr(self._sink, "accepting", True):
            return json_error(503, "unavailable", "collector overloaded, retry later", cors)
        tally = Tally()
        site, document = self._authenticate(request)
        if site is None:
            # Unauthenticated input is nobody's data: refused and counted, never stored.
            self._metrics.inc("requests_refused_total", reason="unauthorized")
            return json_error(401, "unauthorized", "unknown or missing write key", cors)
        ctx = context_for(self._settings, request)
        if ctx.signals.opted_out:  # a browser call through a proxy, from an opted-out browser
            count = (
                1
                if forced_type
                else count_items(request.body, request.headers, self._settings, "batch")
            )
            self._service.drop("opt_out", tally, count)
            return json_response(200, {"success": True}, cors)
        try:
            if document is None:
                document = decode_body(request.body, request.headers, self._settings)
            items, sent_at = self._messages(document, forced_type)
        except BodyError as exc:
            raw = redact_json(request.body.decode("utf-8", "replace"))
            self._service.dead_letter(exc.reason, exc.message, "segment", raw, tally)
            return json_error(exc.status, exc.reason, exc.message, cors)
        for item in items:
            self._one(item, site, sent_at, len(request.body), ctx, tally)
        return json_response(200, {"success": True}, cors)

    def _authenticate(self, request: Request) -> tuple[str | None, Any]:
        """The site of the write key, from Basic auth or else from the body's `writeKey`."""
        key = _basic_user(request.headers.get("authorization", ""))
        document = None
        if key is None:
            try:
                document = decode_body(request.body, request.headers, self._settings)
            except BodyError:
                return None, None
            if isinstance(document, dict) and isinstance(document.get("writeKey"), str):
                key = document["writeKey"].encode()
        site = None
        for known, known_site in self._keys:  # no early exit: timing says nothing
            if key and hmac.compare_digest(key, known):
                site = known_site
        return site, document

    def _messages(self, document: Any, forced_type: str | None) -> tuple[list[Any], Any]:
        if not isinstance(document, dict):
            raise BodyError(400, "invalid", "the body must be a JSON object")
        if forced_type is None:
            batch = document.get("batch")
            if not isinstance(batch, list):
                raise BodyError(400, "invalid", "batch: a list of messages is required")
            return as_batch(batch, self._settings), _batch_sent_at(document.get("sentAt"))
        return [{**document, "type": forced_type}], None

    def _one(
        self, item: Any, site: str, sent_at: Any, size: int, ctx: Context, tally: Tally
    ) -> None:
        received_ms = now_ms()
        try:
            if item_too_large(item, size, self._settings):
                raise BodyError(400, "too_large", "message over the size limit")
            if isinstance(item, dict) and "sentAt" not in item and sent_at is not None:
                item = {**item, "sentAt": sent_at}
            message = SegmentMessage.model_validate(item)
            fields, granted = segment_fields(message, site, ctx, received_ms)
        except (BodyError, ValidationError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, BodyError) else "invalid"
            detail = describe(exc) if isinstance(exc, ValidationError) else str(exc)
            raw = redact_json(orjson.dumps(item).decode())
            self._service.dead_letter(reason, detail, "segment", raw, tally)
            return
        self._service.accept(fields, ctx, granted, tally, received_ms)


def _batch_sent_at(value: Any) -> datetime | None:
    # A broken batch clock loses the skew correction, not every message of the batch.
    try:
        return _DATETIME.validate_python(value) if value is not None else None
    except ValidationError:
        return None


def _basic_user(header: str) -> bytes | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, _ = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return None
    return user


def segment_fields(
    m: SegmentMessage, site: str, ctx: Context, received_ms: int
) -> tuple[dict[str, Any], list[str] | None]:
    """Event fields of one Segment message, and the consent categories it grants."""
    if not (m.userId or m.anonymousId):
        raise ValueError("userId or anonymousId is required")
    c = m.context
    props = dict(m.traits if m.type in ("identify", "group") else m.properties)
    email = _pop_email(props) or _pop_email(dict(m.traits))
    fields: dict[str, Any] = {
        "event_type": _event_type(m),
        "site_id": site,
        **_device(m),
        "user_id": m.userId or "",
        "email_hash": hash_email(email),
        "advertising_id": c.device.advertisingId if c.device.adTrackingEnabled else "",
        "ts_ms": event_time(_ms(m.originalTimestamp or m.timestamp), _ms(m.sentAt), received_ms),
        "url": _str(props.get("url")) or c.page.url,
        "referrer": _str(props.get("referrer")) or c.page.referrer,
        "page_title": _str(props.get("title")) or c.page.title or m.name,
        "category": _str(props.get("category"))[:256],
        "product_id": _str(props.get("product_id"))[:256],
        **_revenue(props),
        "campaign": c.campaign.name,
        "locale": c.locale,
        "timezone": c.timezone,
        "message_id": m.messageId,
        "props": props | _extra(m),
        "source": "segment",
        # A server-side SDK's own user agent and address are not the user's.
        "user_agent": c.userAgent,
        "ip": c.ip or ctx.client_ip,
    }
    fields |= {f"utm_{k}": getattr(c.campaign, k) for k in ("source", "medium", "term", "content")}
    prefs = c.consent.categoryPreferences
    granted = None if prefs is None else [k.lower() for k, v in prefs.items() if v]
    return fields, granted


def _event_type(m: SegmentMessage) -> str:
    if m.type == "track":
        name = _SPEC_EVENTS.get(m.event.strip().lower()) or _snake(m.event)
        if not name:
            raise ValueError("track: event is required")
        return name
    return {"page": "page_view", "screen": "screen_view"}.get(m.type, m.type)


def _snake(name: str) -> str:
    snake = _NOT_NAME.sub("_", name.lower()).strip("_")[:64]
    return f"e_{snake}"[:64] if snake[:1].isdigit() else snake


def _device(m: SegmentMessage) -> dict[str, str]:
    if m.context.device.id:
        return {"device_id": m.context.device.id, "device_kind": "app"}
    if m.anonymousId:
        return {"device_id": m.anonymousId, "device_kind": "anonymous_id"}
    # Server-side calls with only a user id: keyed by the user, so their order holds.
    return {"device_id": f"user:{m.userId}", "device_kind": "user"}


def _extra(m: SegmentMessage) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if m.type == "track" and m.event:
        extra["event"] = m.event
    if m.name:
        extra["name"] = m.name
    if m.previousId:
        extra["previous_id"] = m.previousId
    if m.groupId:
        extra["group_id"] = m.groupId
    return extra


def _revenue(props: dict[str, Any]) -> dict[str, Any]:
    value = props.get("revenue", props.get("total"))
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1e9
    currency = _str(props.get("currency")).upper()
    return {
        "revenue": float(value) if ok else 0.0,
        "currency": currency if len(currency) == 3 and currency.isalpha() else "",
    }


def _pop_email(values: dict[str, Any]) -> str:
    return _str(values.pop("email", ""))[:256]


def _str(value: Any) -> str:
    return value[:4096] if isinstance(value, str) else ""


def _ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:  # Segment's timestamps are UTC when no offset is given
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)
