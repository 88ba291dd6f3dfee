"""E-mail tracking: an open pixel and a click redirect per campaign and recipient.

Both carry an HMAC-SHA256 signature over (site, campaign, recipient, target) made with
`TRACKPIPE_EMAIL_LINK_KEY`, so nobody can forge opens or turn the redirect into an open
redirect: an unsigned or altered link gets a 400, never a redirect. `sign_link` (and the
`trackpipe sign-link` command) produce the URLs to put in a campaign.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from pydantic import TypeAdapter, ValidationError

from collector.edge import NO_STORE, context_for, json_error, visitor_cookie
from collector.http import Request, Response
from collector.privacy import redact_query
from collector.service import CollectorService, Context, Tally, now_ms
from schemas.events import SiteId
from trackpipe.settings import Settings

OPEN_PATH, CLICK_PATH = "/e/o", "/e/c"
_FIELDS = ("s", "c", "r", "u")
_MAX = {"s": 64, "c": 256, "r": 256, "u": 4096}
_SITE = TypeAdapter(SiteId)


def signature(key: bytes, site: str, campaign: str, recipient: str, target: str = "") -> str:
    # Fields joined by a byte that cannot appear in them, so no two tuples sign the same.
    message = "\x1f".join(("v1", site, campaign, recipient, target)).encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()[:16]  # 128 bits is plenty
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign_link(
    base_url: str, key: bytes, site: str, campaign: str, recipient: str, target: str = ""
) -> str:
    """The click URL for `target`, or the open-pixel URL when no target is given."""
    # The Location header is ASCII: percent-encode anything else once, here.
    target = quote(target, safe=":/?#[]@!$&'()*+,;=%~")
    if target and not _safe_target(target):
        raise ValueError("only absolute http(s) URLs can be signed")
    params = {"s": site, "c": campaign, "r": recipient}
    if target:
        params["u"] = target
    params["sig"] = signature(key, site, campaign, recipient, target)
    path = CLICK_PATH if target else OPEN_PATH
    return f"{base_url.rstrip('/')}{path}?{urlencode(params)}"


class EmailRoutes:
    def __init__(self, settings: Settings, service: CollectorService, pixel: bytes) -> None:
        self._settings = settings
        self._service = service
        self._pixel = pixel
        key = settings.email_link_key
        self._key = key.get_secret_value().encode() if key else None

    def table(self) -> dict[tuple[str, str], Any]:
        return {("GET", OPEN_PATH): self.open, ("GET", CLICK_PATH): self.click}

    def _verified(self, query: str, with_target: bool) -> dict[str, str] | None:
        try:
            params = dict(parse_qsl(query, max_num_fields=10))
        except ValueError:
            return None
        fields = _FIELDS if with_target else _FIELDS[:3]
        values = {f: params.get(f, "") for f in fields}
        if self._key is None or any(len(values[f]) > _MAX[f] for f in fields):
            return None
        if not _valid_site(values["s"]) or (with_target and not _safe_target(values["u"])):
            return None
        expected = signature(self._key, values["s"], values["c"], values["r"], values.get("u", ""))
        # Bytes: compare_digest refuses non-ASCII str, and a forged sig may be anything.
        given = params.get("sig", "").encode()
        return values if hmac.compare_digest(expected.encode(), given) else None

    def open(self, request: Request) -> Response:
        # Like every pixel, an open always gets its GIF; a forged one is only dead-lettered.
        tally = Tally()
        ctx = context_for(self._settings, request)
        values = self._verified(request.query, with_target=False)
        if values is None:
            self._bad(request, ctx, tally)
        else:
            # Mail clients and their image proxies are no browser worth a cookie: the
            # recipient is the key, so each recipient's events keep their order.
            fields = _fields(values, "email_open") | {
                "device_id": f"email:{values['c']}:{values['r']}",
                "device_kind": "email",
            }
            self._service.accept(fields, ctx, None, tally, now_ms())
        return Response(200, self._pixel, "image/gif", [NO_STORE])

    def click(self, request: Request) -> Response:
        tally = Tally()
        ctx = context_for(self._settings, request)
        values = self._verified(request.query, with_target=True)
        if values is None:
            self._bad(request, ctx, tally)
            return json_error(400, "bad_signature", "this link is not signed by the sender")
        # The click lands in a browser: its cookie ties the recipient to that device.
        fields = _fields(values, "email_click") | {
            "device_id": ctx.visitor_id,
            "device_kind": "cookie",
            "url": values["u"],
        }
        self._service.accept(fields, ctx, None, tally, now_ms())
        headers = [NO_STORE, ("Location", values["u"])]
        if tally.identified:
            headers.append(visitor_cookie(self._settings, ctx.visitor_id))
        return Response(302, b"", "text/plain", headers)

    def _bad(self, request: Request, ctx: Context, tally: Tally) -> None:
        if ctx.signals.opted_out:  # nothing about an opted-out browser, not even this
            self._service.drop("opt_out", tally)
            return
        detail = "missing, malformed or wrong signature"
        if self._key is None:
            detail = "e-mail link signing is not configured"
        raw = redact_query(request.query)
        self._service.dead_letter("bad_signature", detail, "email", raw, tally)


def _fields(values: dict[str, str], event_type: str) -> dict[str, Any]:
    return {
        "event_type": event_type,
        "site_id": values["s"],
        "user_id": values["r"],
        "campaign": values["c"],
        "source": "email",
        "ts_ms": now_ms(),
    }


def _valid_site(site: str) -> bool:
    try:
        _SITE.validate_python(site)
    except ValidationError:
        return False
    return True


def _safe_target(url: str) -> bool:
    # Signed or not, only absolute http(s) URLs, and nothing that could split the header.
    if not url.isascii() or any(ch in url for ch in "\r\n\x00"):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)
