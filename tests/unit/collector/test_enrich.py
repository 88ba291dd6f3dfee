"""User agents, bots and channels: the documented rules, one case per rule."""

from __future__ import annotations

import pytest

from collector.enrich import Campaign, campaign_from_url, channel, parse_user_agent
from tests.unit.collector.helpers import BOTS, RAW, events, get

UAS = {
    "chrome_windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "edge_windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86",
    "safari_iphone": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "chrome_ios": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
    "firefox_linux": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "safari_mac": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "samsung_android": "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, "
    "like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
    "android_tablet": "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "ipad": "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
    "opera": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 OPR/116.0.0.0",
    "chromebook": "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/131.0.0.0 Safari/537.36",
    "app": "ShopApp/5.2 (Android 15; Pixel 9)",
}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("chrome_windows", ("desktop", "Windows", "Chrome")),
        ("edge_windows", ("desktop", "Windows", "Edge")),
        ("safari_iphone", ("mobile", "iOS", "Safari")),
        ("chrome_ios", ("mobile", "iOS", "Chrome")),
        ("firefox_linux", ("desktop", "Linux", "Firefox")),
        ("safari_mac", ("desktop", "macOS", "Safari")),
        ("samsung_android", ("mobile", "Android", "Samsung Internet")),
        ("android_tablet", ("tablet", "Android", "Chrome")),
        ("ipad", ("tablet", "iOS", "Safari")),
        ("opera", ("desktop", "Windows", "Opera")),
        ("chromebook", ("desktop", "ChromeOS", "Chrome")),
        ("app", ("mobile", "Android", "")),
    ],
)
def test_user_agents(name: str, expected: tuple[str, str, str]) -> None:
    ua = parse_user_agent(UAS[name])
    assert (ua.device_type, ua.os, ua.browser) == expected
    assert ua.is_bot is False


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/131.0.0.0 Safari/537.36",
        "curl/8.5.0",
        "python-requests/2.32.3",
        "Wget/1.21.4",
        "Go-http-client/1.1",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    ],
)
def test_bots_are_flagged(agent: str) -> None:
    ua = parse_user_agent(agent)
    assert ua.is_bot and ua.device_type == "bot"


def test_parses_are_cached() -> None:
    parse_user_agent.cache_clear()
    for _ in range(3):
        parse_user_agent(UAS["opera"])
    assert parse_user_agent.cache_info().hits == 2


def test_campaign_parameters_come_from_the_page_url() -> None:
    url = "https://shop.example/?utm_source=Newsletter&utm_medium=email&utm_campaign=w&utm_term=t"
    assert campaign_from_url(url) == Campaign("Newsletter", "email", "w", "t", "", False)
    assert campaign_from_url("https://shop.example/?gclid=abc").click_id
    assert campaign_from_url("https://shop.example/shoes") == Campaign()


PAGE = "https://shop.example/p"


@pytest.mark.parametrize(
    ("url", "referrer", "source", "expected"),
    [
        (PAGE + "?utm_medium=email", "", "", "email"),
        (PAGE, "", "email", "email"),
        (PAGE, "https://mail.google.com/", "", "email"),
        (PAGE + "?utm_medium=cpc&utm_source=google", "https://www.google.com/", "", "paid_search"),
        (PAGE + "?gclid=x", "https://www.google.com/", "", "paid_search"),
        (PAGE + "?utm_medium=cpc&utm_source=facebook", "", "", "social"),
        (PAGE + "?utm_medium=display", "https://news.example/", "", "display"),
        (PAGE, "https://m.facebook.com/", "", "social"),
        (PAGE, "https://t.co/abc", "", "social"),
        (PAGE + "?utm_medium=social", "", "", "social"),
        (PAGE, "https://www.google.co.uk/", "", "organic_search"),
        (PAGE, "https://duckduckgo.com/", "", "organic_search"),
        (PAGE, "https://news.example/article", "", "referral"),
        (PAGE + "?utm_medium=affiliate", "", "", "referral"),
        (PAGE, "https://shop.example/cart", "", "direct"),
        (PAGE, "", "", "direct"),
        (PAGE + "?utm_medium=weird", "", "", "direct"),
    ],
)
def test_channel_rules(url: str, referrer: str, source: str, expected: str) -> None:
    assert channel(url, referrer, campaign_from_url(url), source) == expected


def test_bots_go_to_their_own_topic(routes, sink, metrics) -> None:
    get(routes, "/i", "s=shop", {"user-agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"})
    get(routes, "/i", "s=shop&u=" + "https%3A%2F%2Fshop.example%2F%3Futm_medium%3Demail")
    [bot] = events(sink, BOTS)
    [human] = events(sink, RAW)
    assert bot["is_bot"] == 1 and human["is_bot"] == 0  # a number on the wire
    assert (human["channel"], human["utm_medium"], human["device_type"]) == (
        "email",
        "email",
        "desktop",
    )
    assert metrics.get("bots_total", source="pixel") == 1


def test_bots_are_not_counted_as_accepted_people(routes, metrics) -> None:
    get(routes, "/i", "s=shop", {"user-agent": "curl/8.5.0"})
    assert metrics.get("events_accepted_total", type="page_view") == 0
    assert metrics.get("bots_total", source="pixel") == 1
