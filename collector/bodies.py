"""Reading JSON request bodies within the limits: soft size, gzip, batch length, item size.

Every failure is a `BodyError` carrying the HTTP answer and the dead-letter reason, so the
endpoints answer clearly and dead-letter the payload the same way.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from trackpipe.settings import Settings

# orjson reads 1024 levels of nesting but writes only 254: a document between the two would
# be accepted here and then fail (500, event lost) wherever it is re-encoded, so it is
# refused up front like any other unreadable body.
MAX_DEPTH = 254


@dataclass
class BodyError(Exception):
    status: int
    reason: str  # dead-letter reason and the answer's `code`
    message: str


def decode_body(body: bytes, headers: dict[str, str], settings: Settings) -> Any:
    """The JSON document of a request body (plain, or gzip as some SDKs send)."""
    if len(body) > settings.soft_body_bytes:
        raise BodyError(413, "too_large", f"body over {settings.soft_body_bytes} bytes")
    if headers.get("content-encoding", "").strip().lower() == "gzip":
        body = _gunzip(body, settings.soft_body_bytes)
    if not body.strip():
        raise BodyError(400, "empty", "empty body: send a JSON object or array")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, "unparsable", f"invalid JSON: {exc}") from None
    # Nesting needs one bracket per level: the common small body is never re-encoded.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _too_deep(document):
        raise BodyError(400, "unparsable", f"JSON nested deeper than {MAX_DEPTH} levels")
    return document


def _too_deep(document: Any) -> bool:
    try:
        orjson.dumps(document)
    except orjson.JSONEncodeError:  # only its recursion limit: parsed JSON is encodable
        return True
    return False


def _gunzip(body: bytes, limit: int) -> bytes:
    # Bounded: a few KB of gzip can inflate to gigabytes.
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BodyError(400, "unparsable", f"invalid gzip body: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyError(413, "too_large", f"inflated body over {limit} bytes")
    return out


def as_batch(document: Any, settings: Settings) -> list[Any]:
    items = document if isinstance(document, list) else [document]
    if len(items) > settings.max_batch_events:
        raise BodyError(
            400, "batch_too_long", f"{len(items)} events, at most {settings.max_batch_events}"
        )
    if not items:
        raise BodyError(400, "empty", "empty batch")
    return items


def item_too_large(item: Any, body_size: int, settings: Settings) -> bool:
    # Only a body bigger than the item limit can hold a too-large item: skip re-encoding.
    return body_size > settings.max_event_bytes and (
        len(orjson.dumps(item)) > settings.max_event_bytes
    )


def count_items(body: bytes, headers: dict[str, str], settings: Settings, key: str = "") -> int:
    """How many events a body carries, for counting what is dropped unread (opt-out)."""
    try:
        document = decode_body(body, headers, settings)
        if key:
            document = document.get(key) if isinstance(document, dict) else None
            if not isinstance(document, list):
                return 1
        return len(as_batch(document, settings))
    except BodyError:
        return 1  # an unreadable body counts as the one event it would have been
