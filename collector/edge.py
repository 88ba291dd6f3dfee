"""HTTP helpers shared by the route modules: client context, cookies, JSON answers, CORS."""

from __future__ import annotations

import functools
from collections.abc import Iterable

import orjson

from collector.consent import signals_from_headers
from collector.http import Request, Response
from collector.service import Context, new_visitor_id
from trackpipe.settings import Settings

NO_STORE = ("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0")
JSON = "application/json"
_HEX = "0123456789abcdef"


def client_ip(settings: Settings, request: Request) -> str:
    if settings.trust_forwarded_for and "x-forwarded-for" in request.headers:
        return request.headers["x-forwarded-for"].split(",")[0].strip()
    return request.client_ip


def valid_visitor(value: str) -> bool:
    # Our own ids are 32 hex chars; anything else (tampered, injected) is replaced.
    return len(value) == 32 and not value.strip(_HEX)


def context_for(settings: Settings, request: Request) -> Context:
    visitor, optout = request.cookies(settings.cookie_name, settings.optout_cookie_name)
    if not visitor or not valid_visitor(visitor):
        visitor = new_visitor_id()
    opted_out = optout == "1"
    return Context(
        client_ip(settings, request),
        request.headers.get("user-agent", ""),
        visitor,
        signals_from_headers(request.headers, opted_out),
    )


@functools.lru_cache(maxsize=16)
def _attributes(samesite: str, domain: str, secure: bool, max_age: int) -> str:
    # Depends on settings only: built once, not for every beacon.
    parts = [f"Max-Age={max_age}", "Path=/", f"SameSite={samesite}", "HttpOnly"]
    if domain:
        parts.append(f"Domain={domain}")
    if secure or samesite == "None":
        parts.append("Secure")
    return "; ".join(parts)


def cookie(settings: Settings, name: str, value: str, max_age: int) -> tuple[str, str]:
    s = settings
    attributes = _attributes(s.cookie_samesite, s.cookie_domain, s.cookie_secure, max_age)
    return ("Set-Cookie", f"{name}={value}; {attributes}")


def visitor_cookie(settings: Settings, visitor_id: str) -> tuple[str, str]:
    # Renewed on every hit so the cookie lives as long as the visitor stays active.
    return cookie(settings, settings.cookie_name, visitor_id, settings.cookie_max_age_s)


def json_response(
    status: int, payload: object, headers: Iterable[tuple[str, str]] = ()
) -> Response:
    return Response(status, orjson.dumps(payload), JSON, [NO_STORE, *headers])


def json_error(
    status: int, code: str, message: str, headers: Iterable[tuple[str, str]] = ()
) -> Response:
    # `code` + `message` is also the shape Segment's SDKs read from an error answer.
    return json_response(status, {"ok": False, "code": code, "message": message}, headers)


def cors_headers(settings: Settings, request: Request) -> list[tuple[str, str]]:
    """CORS for configured origins only; credentials allowed so the visitor cookie travels."""
    origin = request.headers.get("origin", "")
    if not origin or not _allowed(settings.cors_origins, origin):
        return []
    return [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
        ("Vary", "Origin"),
    ]


def preflight(settings: Settings, request: Request) -> Response:
    headers = cors_headers(settings, request)
    if not headers:
        return json_error(403, "origin_not_allowed", "this origin may not call the collector")
    headers += [
        ("Access-Control-Allow-Methods", "POST, OPTIONS"),
        ("Access-Control-Allow-Headers", "Content-Type, Authorization"),
        ("Access-Control-Max-Age", "86400"),
    ]
    return Response(204, b"", "text/plain", headers)


def _allowed(origins: list[str], origin: str) -> bool:
    # Exact matches only ("*" allows any origin: for development, not for production).
    return origin in origins or "*" in origins
