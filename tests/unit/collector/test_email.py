"""E-mail opens and click redirects: signed links only, never an open redirect."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from collector.email import sign_link, signature
from collector.metrics import Metrics
from collector.routes import PIXEL_GIF
from collector.server import build_routes
from collector.sinks.memory import MemorySink
from tests.unit.collector.helpers import DEAD, RAW, events, get, header
from trackpipe.cli import main
from trackpipe.settings import Settings

KEY = b"s3cret-link-key"


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, email_link_key=KEY.decode())


def split(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.path, parts.query


def test_signed_click_redirects_and_records_the_click(routes, sink) -> None:
    link = sign_link("https://t.example", KEY, "shop", "winter", "user-7", "https://shop.example/s")
    path, query = split(link)
    response = get(routes, path, query)
    assert response.status == 302
    assert header(response, "Location") == ["https://shop.example/s"]
    assert header(response, "Set-Cookie")[0].startswith("tp_vid=")
    [event] = events(sink)
    assert (event["event_type"], event["campaign"], event["user_id"]) == (
        "email_click",
        "winter",
        "user-7",
    )
    assert (event["channel"], event["source"], event["device_kind"]) == ("email", "email", "cookie")


def test_signed_open_pixel_records_the_open(routes, sink) -> None:
    path, query = split(sign_link("https://t.example", KEY, "shop", "winter", "user-7"))
    response = get(routes, path, query)
    assert response.body == PIXEL_GIF and header(response, "Set-Cookie") == []
    [event] = events(sink)
    assert event["event_type"] == "email_open"
    assert event["device_id"] == "email:winter:user-7"


def _tampered() -> list[str]:
    good = dict(parse_qsl(split(sign_link("x", KEY, "shop", "c", "r", "https://shop.example/"))[1]))
    other_sig = signature(b"another key", "shop", "c", "r", "https://evil.example/")
    return [
        urlencode({**good, "u": "https://evil.example/"}),  # target swapped
        urlencode({**good, "r": "someone-else"}),
        urlencode({**good, "sig": other_sig, "u": "https://evil.example/"}),
        urlencode({k: v for k, v in good.items() if k != "sig"}),
        urlencode({"u": "https://evil.example/"}),
        urlencode({**good, "sig": good["sig"][:-1]}),
        urlencode({**good, "sig": "é" * 22}),  # non-ASCII: still a plain 400
        "",
    ]


@pytest.mark.parametrize("query", _tampered())
def test_anything_not_signed_gets_400_and_no_redirect(routes, sink, query: str) -> None:
    response = get(routes, "/e/c", query)
    assert response.status == 400
    assert header(response, "Location") == []
    assert sink.records[RAW] == []
    assert [x["reason"] for x in events(sink, DEAD)] == ["bad_signature"]


def test_only_http_targets_even_when_signed(routes) -> None:
    for target in ("javascript:alert(1)", "//evil.example/", "data:text/html,x"):
        with pytest.raises(ValueError):
            sign_link("x", KEY, "shop", "c", "r", target)
        sig = signature(KEY, "shop", "c", "r", target)
        query = urlencode({"s": "shop", "c": "c", "r": "r", "u": target, "sig": sig})
        assert get(routes, "/e/c", query).status == 400


def test_without_a_key_every_link_is_refused() -> None:
    sink = MemorySink()
    routes = build_routes(Settings(_env_file=None), sink, Metrics())
    path, query = split(sign_link("https://t", KEY, "shop", "c", "r", "https://shop.example/"))
    assert get(routes, path, query).status == 400
    assert "not configured" in events(sink, DEAD)[0]["detail"]


def test_non_ascii_targets_are_percent_encoded_once() -> None:
    link = sign_link("x", KEY, "shop", "c", "r", "https://shop.example/chaussures/été?q=1%202")
    target = dict(parse_qsl(split(link)[1]))["u"]
    assert target == "https://shop.example/chaussures/%C3%A9t%C3%A9?q=1%202"


def test_sign_link_command(monkeypatch, capsys) -> None:
    monkeypatch.setenv("TRACKPIPE_EMAIL_LINK_KEY", KEY.decode())
    monkeypatch.setenv("TRACKPIPE_PUBLIC_URL", "https://t.example")
    from trackpipe.settings import get_settings

    get_settings.cache_clear()
    try:
        args = ["sign-link", "--site", "shop", "--campaign", "c", "--recipient", "r"]
        assert main([*args, "--url", "https://shop.example/"]) == 0
        assert main(args) == 0
        assert main([*args, "--url", "javascript:alert(1)"]) == 2
    finally:
        get_settings.cache_clear()
    click, pixel = capsys.readouterr().out.split()
    assert click.startswith("https://t.example/e/c?") and pixel.startswith("https://t.example/e/o?")
    assert click == sign_link("https://t.example", KEY, "shop", "c", "r", "https://shop.example/")


def test_an_opted_out_browser_is_redirected_but_not_recorded(routes, sink, metrics) -> None:
    link = sign_link("https://t.example", KEY, "shop", "winter", "user-7", "https://shop.example/")
    path, query = split(link)
    response = get(routes, path, query, {"cookie": "tp_optout=1"})
    assert response.status == 302 and header(response, "Set-Cookie") == []
    assert sink.records[RAW] == []
    assert metrics.get("consent_dropped_total", reason="opt_out") == 1
