"""Enrichment at the edge: user agent → device type, OS, browser, bot; referrer + UTM → channel.

Everything here runs per beacon, so it is rule-based and cached: one lower-casing and a few
substring tests per distinct user agent (then an LRU hit), one pre-compiled regex for bots,
and URL parsing only when a URL carries campaign parameters. The rules are documented in
docs/collector.md ("Enrichment"); change both together.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

# Crawlers, monitors, link previews and HTTP libraries; headless browsers are automation.
_BOT = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|scrap|headless|phantomjs|lighthouse|pingdom|uptimerobot"
    r"|facebookexternalhit|embedly|python-|curl/|wget/|go-http-client|java/|libwww"
    r"|apache-httpclient|node-fetch|axios/|postmanruntime|httpie"
)


class UserAgent(NamedTuple):
    device_type: str  # desktop | mobile | tablet | bot | other
    os: str
    browser: str
    is_bot: bool


# (substring, name), first match wins: order matters (Edge and Opera also say "chrome/").
_OS = (
    ("windows phone", "Windows Phone"),
    ("windows", "Windows"),
    ("iphone", "iOS"),
    ("ipad", "iOS"),
    ("ipod", "iOS"),
    ("android", "Android"),
    ("cros", "ChromeOS"),
    ("mac os x", "macOS"),
    ("macintosh", "macOS"),
    ("linux", "Linux"),
)
_BROWSERS = (
    ("edg", "Edge"),  # edg/, edge/, edga/, edgios/
    ("opr/", "Opera"),
    ("opera", "Opera"),
    ("samsungbrowser", "Samsung Internet"),
    ("firefox/", "Firefox"),
    ("fxios/", "Firefox"),
    ("crios/", "Chrome"),
    ("chrome/", "Chrome"),
    ("chromium/", "Chrome"),
    ("safari/", "Safari"),
)


@lru_cache(maxsize=8192)
def parse_user_agent(user_agent: str) -> UserAgent:
    ua = user_agent.lower()
    is_bot = bool(_BOT.search(ua))
    os_name = next((name for token, name in _OS if token in ua), "")
    browser = next((name for token, name in _BROWSERS if token in ua), "")
    return UserAgent(_device_type(ua, os_name, is_bot), os_name, browser, is_bot)


def _device_type(ua: str, os_name: str, is_bot: bool) -> str:
    if is_bot:
        return "bot"
    if "ipad" in ua or "tablet" in ua or "kindle" in ua or "silk/" in ua:
        return "tablet"
    if os_name == "Android":
        # Browsers on Android phones say "Mobile" and on tablets do not; apps' own user
        # agents tell neither, and most app traffic comes from phones.
        return "tablet" if "mozilla/" in ua and "mobile" not in ua else "mobile"
    if "mobi" in ua or os_name in ("iOS", "Windows Phone"):
        return "mobile"
    if os_name in ("Windows", "macOS", "Linux", "ChromeOS"):
        return "desktop"
    return "other"


class Campaign(NamedTuple):
    source: str = ""
    medium: str = ""
    name: str = ""
    term: str = ""
    content: str = ""
    click_id: bool = False  # gclid/msclkid-style auto-tagging: a paid search click


_NO_CAMPAIGN = Campaign()
_CLICK_IDS = frozenset({"gclid", "gbraid", "wbraid", "msclkid", "dclid"})


def campaign_from_url(url: str) -> Campaign:
    # Most page URLs carry no campaign: skip parsing them at all.
    if "utm_" not in url and "clid" not in url and "braid" not in url:
        return _NO_CAMPAIGN
    params = dict(parse_qsl(urlsplit(url).query, max_num_fields=200))
    return Campaign(
        source=params.get("utm_source", "")[:256],
        medium=params.get("utm_medium", "")[:256],
        name=params.get("utm_campaign", "")[:256],
        term=params.get("utm_term", "")[:256],
        content=params.get("utm_content", "")[:256],
        click_id=any(k in params for k in _CLICK_IDS),
    )


_EMAIL_MEDIA = frozenset({"email", "e-mail", "e_mail", "newsletter", "mail"})
_PAID_MEDIA = frozenset({"cpc", "ppc", "paid", "paidsearch", "paid_search", "paid-search", "sem"})
_DISPLAY_MEDIA = frozenset({"display", "banner", "cpm", "programmatic", "retargeting", "video"})
_SOCIAL_MEDIA = frozenset(
    {"social", "social-network", "social_network", "social-media", "social_media", "sm"}
    | {"paid_social", "paid-social", "paidsocial", "social_paid", "social-paid"}
)
_REFERRAL_MEDIA = frozenset({"referral", "affiliate", "partner"})
_SEARCH_BRANDS = frozenset(
    {"google", "bing", "duckduckgo", "yahoo", "baidu", "yandex", "ecosia", "qwant"}
    | {"startpage", "naver", "seznam", "ask", "aol", "brave", "kagi"}
)
_SOCIAL_SITES = frozenset(
    {"facebook.com", "fb.com", "fb.me", "instagram.com", "t.co", "twitter.com", "x.com"}
    | {"linkedin.com", "lnkd.in", "pinterest.com", "pin.it", "reddit.com", "tiktok.com"}
    | {"youtube.com", "youtu.be", "snapchat.com", "tumblr.com", "threads.net", "bsky.app"}
    | {"vk.com", "whatsapp.com", "wa.me", "t.me", "telegram.org", "quora.com", "discord.com"}
    | {"mastodon.social"}
)
_SOCIAL_SOURCES = frozenset(
    {"facebook", "fb", "instagram", "ig", "twitter", "x", "linkedin", "pinterest", "reddit"}
    | {"tiktok", "youtube", "snapchat", "tumblr", "threads", "bluesky", "whatsapp", "telegram"}
)
_WEBMAIL = frozenset({"mail.google.com", "outlook.live.com", "outlook.office.com"})


@lru_cache(maxsize=8192)  # the same landing pages and referrers come again and again
def channel(url: str, referrer: str, campaign: Campaign, source: str = "") -> str:
    """The marketing channel of an event; rules in docs/collector.md, first match wins."""
    medium, utm_source = campaign.medium.lower(), campaign.source.lower()
    ref_host = _host(referrer)
    if source == "email" or medium in _EMAIL_MEDIA:
        return "email"
    if medium in _PAID_MEDIA or (campaign.click_id and not medium):
        return "social" if _is_social(utm_source, ref_host) else "paid_search"
    if medium in _DISPLAY_MEDIA:
        return "display"
    if medium in _SOCIAL_MEDIA or _is_social(utm_source, ref_host):
        return "social"
    if ref_host in _WEBMAIL or ref_host.startswith(("mail.", "webmail.")):
        return "email"
    if medium == "organic" or _is_search(ref_host):
        return "organic_search"
    if medium in _REFERRAL_MEDIA or (ref_host and ref_host != _host(url)):
        return "referral"
    return "direct"


@lru_cache(maxsize=4096)
def _host(url: str) -> str:
    if not url:
        return ""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:  # e.g. a malformed IPv6 literal
        return ""
    return host.removeprefix("www.")


@lru_cache(maxsize=4096)
def _is_search(host: str) -> bool:
    # "google.de", "www.google.co.uk", "search.brave.com": a brand label before the suffix.
    labels = host.split(".")
    return any(label in _SEARCH_BRANDS for label in labels[:-1])


def _is_social(utm_source: str, host: str) -> bool:
    if utm_source in _SOCIAL_SOURCES:
        return True
    return _is_social_host(host)


@lru_cache(maxsize=4096)
def _is_social_host(host: str) -> bool:
    if not host:
        return False
    parts = host.split(".")
    # m.facebook.com, l.instagram.com, uk.linkedin.com: compare every parent domain.
    return any(".".join(parts[i:]) in _SOCIAL_SITES for i in range(len(parts) - 1))
