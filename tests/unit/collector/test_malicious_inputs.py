"""Malicious inputs, one named test per attack, through the real routes or the real server.

Each test checks what the client gets (status, a GIF for pixels) and what became of the
event: delivered with the hostile data kept as inert data, or dead-lettered with a reason
and counted. Nothing is lost, nothing is executed.

Covered elsewhere, not repeated here:
- random input on every endpoint: tests/unit/collector/test_properties.py (`make fuzz`);
- hostile audience rule files: tests/unit/streams/test_audiences.py;
- read API keys (several keys, either header, empty or unset keys):
  tests/unit/streams/test_read_keys.py; only what it lacks is below;
- SQL-like strings stored and read back from ClickHouse: tests/integration/test_warehouse.py.
"""

from __future__ import annotations

import base64
import gzip
import re
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

import orjson
import pytest
from pydantic import SecretStr

from collector.email import sign_link, signature
from collector.http import HttpProtocol
from collector.metrics import Metrics
from collector.routes import PIXEL_GIF, Routes
from collector.server import build_routes
from collector.sinks.memory import MemorySink
from tests.unit.collector.helpers import (
    BOTS,
    CHROME,
    DEAD,
    RAW,
    as_served,
    events,
    get,
    header,
    post,
    serving,
)
from trackpipe.settings import Settings

WRITE_KEY = "wk_malicious"
AUTH = {"authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
LINK_KEY = b"link-key"
HARD, SOFT = 8192, 4096  # small limits keep the oversized bodies small
VISITOR_COOKIE = re.compile(r"tp_vid=[0-9a-f]{32}; Max-Age=\d+; Path=/; SameSite=Lax; HttpOnly")


@pytest.fixture
def settings() -> Settings:
    return Settings(
        _env_file=None,
        segment_write_keys={"shop": WRITE_KEY},
        email_link_key=LINK_KEY.decode(),
        max_body_bytes=HARD,
        soft_body_bytes=SOFT,
    )


@pytest.fixture
def server(routes: Routes, metrics: Metrics, settings: Settings) -> Iterator[int]:
    """The collector's own HTTP server on a real socket, counting into `metrics`."""
    limits = (settings.max_body_bytes, settings.max_url_bytes)
    with serving(as_served(lambda writes: HttpProtocol(routes, *limits, metrics, writes))) as port:
        yield port


def exchange(port: int, payload: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """Send raw bytes, read until the server closes: (status line, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (x.partition(b":") for x in lines)]
    return status, headers, body


def harness(**overrides: Any) -> tuple[Routes, MemorySink, Metrics]:
    sink, metrics = MemorySink(), Metrics()
    settings = Settings(_env_file=None, segment_write_keys={"shop": WRITE_KEY}, **overrides)
    return build_routes(settings, sink, metrics), sink, metrics


def stored(sink: MemorySink) -> list[dict[str, Any]]:
    """Every accepted event, people's and bots'."""
    return events(sink, RAW) + events(sink, BOTS)


# Oversized bodies


@pytest.mark.parametrize("path", ["/collect", "/v1/batch"])
def test_body_over_the_hard_limit_gets_413_unread_and_is_counted(
    server: int, sink: MemorySink, metrics: Metrics, path: str
) -> None:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {HARD + 1}\r\n\r\n"
    ).encode() + b"[" * 10  # the rest never comes: the answer must not wait for it
    status, _, _ = exchange(server, request)
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    assert dict(sink.records) == {}  # nothing stored, nothing dead-lettered: never read
    assert metrics.get("requests_refused_total", reason="body_too_large") == 1


def test_chunked_body_over_the_hard_limit_gets_413_and_is_counted(
    server: int, sink: MemorySink, metrics: Metrics
) -> None:
    # A chunked body announces no length: the server counts as it reads.
    chunk = b"a" * (HARD + 1)
    request = (
        b"POST /collect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(chunk):x}\r\n".encode()
        + chunk
        + b"\r\n0\r\n\r\n"
    )
    status, _, _ = exchange(server, request)
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    assert dict(sink.records) == {}
    assert metrics.get("requests_refused_total", reason="body_too_large") == 1


@pytest.mark.parametrize(
    ("path", "source", "headers"),
    [("/collect", "collect", {}), ("/v1/batch", "segment", AUTH)],
)
def test_body_over_the_soft_limit_gets_413_and_a_counted_dead_letter(
    routes: Routes, sink: MemorySink, metrics: Metrics, path: str, source: str, headers: dict
) -> None:
    message = {"type": "track", "site": "shop", "userId": "u", "event": "e"}
    body = orjson.dumps({"batch": [message] * 100} if source == "segment" else [message] * 100)
    assert SOFT < len(body) <= HARD
    response = post(routes, path, body, headers)
    assert response.status == 413
    assert orjson.loads(response.body)["code"] == "too_large"
    [letter] = events(sink, DEAD)
    assert (letter["reason"], letter["source"]) == ("too_large", source)
    assert stored(sink) == []
    assert metrics.get("dead_letters_total", reason="too_large", source=source) == 1
    assert metrics.get("responses_refused_total", path=path, status="413") == 1


def test_gzip_body_inflating_past_the_soft_limit_gets_413_and_a_dead_letter(
    routes: Routes, sink: MemorySink, metrics: Metrics
) -> None:
    bomb = gzip.compress(b"[" + b" " * (SOFT * 100) + b"]")  # small on the wire
    response = post(routes, "/collect", bomb, {"content-encoding": "gzip"})
    assert len(bomb) < SOFT and response.status == 413
    assert [x["reason"] for x in events(sink, DEAD)] == ["too_large"]
    assert metrics.get("dead_letters_total", reason="too_large", source="collect") == 1


# Deeply nested JSON


LEVELS = 100_000
DEEP = {
    "lists": b"[" * LEVELS + b"]" * LEVELS,
    "objects": b'{"a":' * LEVELS + b"1" + b"}" * LEVELS,
    # Past what orjson can write back (254) but within what it reads (1024): the case
    # that used to be accepted and then crash on re-encoding (500, event lost).
    "props_300_deep": b'{"site":"shop","type":"x","userId":"u","event":"e","props":'
    + b"[" * 300
    + b"]" * 300
    + b',"properties":{"a":'
    + b"[" * 300
    + b"]" * 300
    + b"}}",
}


@pytest.mark.parametrize("shape", DEEP)
@pytest.mark.parametrize(
    ("path", "source", "headers"),
    [("/collect", "collect", {}), ("/v1/track", "segment", AUTH)],
)
def test_deeply_nested_json_is_a_clean_400_and_a_dead_letter(
    path: str, source: str, headers: dict, shape: str
) -> None:
    routes, sink, metrics = harness(soft_body_bytes=2_000_000)  # depth is the attack here
    response = post(routes, path, DEEP[shape], headers)  # no RecursionError, no 500
    assert response.status == 400
    assert orjson.loads(response.body)["code"] == "unparsable"
    [letter] = events(sink, DEAD)
    assert (letter["reason"], letter["source"]) == ("unparsable", source)
    assert "depth" in letter["detail"] or "nested deeper" in letter["detail"]
    assert len(letter["raw"]) <= Settings(_env_file=None).dead_letter_raw_bytes
    assert stored(sink) == []
    assert metrics.get("dead_letters_total", reason="unparsable", source=source) == 1


def test_nesting_within_the_limit_is_delivered_intact(routes: Routes, sink: MemorySink) -> None:
    deep: Any = "leaf"
    for _ in range(120):  # 240 levels, the event's own included: under 254
        deep = {"a": [deep]}
    response = post(routes, "/collect", {"site": "shop", "props": {"d": deep}})
    assert orjson.loads(response.body) == {"ok": True, "accepted": 1, "rejected": []}
    assert events(sink)[0]["props"] == {"d": deep}


# Invalid UTF-8


@pytest.mark.parametrize(
    ("path", "source", "headers"),
    [("/collect", "collect", {}), ("/v1/track", "segment", AUTH)],
)
def test_invalid_utf8_in_a_json_body_is_a_400_and_a_dead_letter_with_bytes_replaced(
    routes: Routes, sink: MemorySink, metrics: Metrics, path: str, source: str, headers: dict
) -> None:
    body = b'{"site":"shop","type":"track","userId":"u","event":"e","url":"bad\xff\xfe\xc3"}'
    response = post(routes, path, body, headers)
    assert response.status == 400
    assert orjson.loads(response.body)["code"] == "unparsable"
    [letter] = events(sink, DEAD)
    assert letter["reason"] == "unparsable"
    assert '"url":"bad\ufffd\ufffd\ufffd"' in letter["raw"]  # kept, replaced, valid UTF-8
    assert stored(sink) == []
    assert metrics.get("dead_letters_total", reason="unparsable", source=source) == 1


def test_invalid_utf8_escapes_in_pixel_parameters_are_replaced_and_the_gif_sent(
    routes: Routes, sink: MemorySink
) -> None:
    response = get(routes, "/i", "s=shop&u=https%3A%2F%2Fa.example%2F%FF%FEx&uid=%C3&cat=%ED%A0%80")
    assert (response.status, response.body) == (200, PIXEL_GIF)
    [event] = events(sink)
    assert event["url"] == "https://a.example/\ufffd\ufffdx"
    assert event["user_id"] == "\ufffd"
    assert event["category"] == "\ufffd\ufffd\ufffd"  # an encoded surrogate is no character


def test_raw_non_ascii_bytes_in_the_url_are_refused_by_the_http_parser_and_counted(
    server: int, sink: MemorySink, metrics: Metrics
) -> None:
    # Browsers percent-encode; raw bytes in a request line are not HTTP: 400, not a pixel.
    status, headers, _ = exchange(server, b"GET /i?s=shop&u=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == b"HTTP/1.1 400 Bad Request"
    assert b"set-cookie" not in dict(headers)
    assert dict(sink.records) == {}
    assert metrics.get("requests_refused_total", reason="malformed") == 1


def test_invalid_utf8_in_the_visitor_cookie_gets_a_fresh_id_and_the_gif(
    server: int, sink: MemorySink
) -> None:
    request = (
        b"GET /i?s=shop HTTP/1.1\r\nHost: x\r\nCookie: tp_vid=\xff\xfe\xc3" + b"a" * 29 + b"\r\n"
        b"Connection: close\r\n\r\n"
    )
    status, headers, body = exchange(server, request)
    assert (status, body) == (b"HTTP/1.1 200 OK", PIXEL_GIF)
    [cookie] = [v.decode() for k, v in headers if k == b"set-cookie"]
    assert VISITOR_COOKIE.fullmatch(cookie)
    [event] = events(sink)
    assert cookie.startswith(f"tp_vid={event['device_id']};")


# Header injection through cookies


INJECTED_COOKIES = [
    "tp_vid=" + "ab" * 16 + "\r\nSet-Cookie: evil=1",
    "tp_vid=evil\r\nSet-Cookie: evil=1; Domain=evil.example",
    "tp_vid=" + "ab" * 15 + "; Domain=evil.example; Max-Age=999999999",
    "tp_vid=Set-Cookie: evil=1",
    "tp_vid=" + "AB" * 16,  # our ids are lower-case hex: anything else is not ours
]


@pytest.mark.parametrize("cookie", INJECTED_COOKIES)
def test_injected_visitor_cookie_is_replaced_and_never_echoed(
    routes: Routes, sink: MemorySink, cookie: str
) -> None:
    response = get(routes, "/i", "s=shop", {"cookie": cookie})
    assert (response.status, response.body) == (200, PIXEL_GIF)
    [set_cookie] = header(response, "Set-Cookie")
    assert VISITOR_COOKIE.fullmatch(set_cookie)  # no CR/LF, no attacker attribute
    assert "evil" not in set_cookie and "AB" not in set_cookie
    [event] = events(sink)
    assert set_cookie.startswith(f"tp_vid={event['device_id']};")
    assert event["device_id"] not in cookie  # a fresh id, not the injected one
    # What the client parses is the encoded header block: one line per header, ours only.
    head = response.encode(keep_alive=True).split(b"\r\n\r\n")[0].decode("latin-1")
    assert "evil" not in head and all("\r" not in line for line in head.split("\r\n"))


@pytest.mark.parametrize("suffix", ["; Domain=evil.example; Max-Age=1", "\n", " "])
def test_a_valid_id_followed_by_cookie_attributes_keeps_the_id_but_not_the_attributes(
    routes: Routes, sink: MemorySink, suffix: str
) -> None:
    # Cookie pairs are split at ";" and trimmed: what follows a valid id is never ours.
    visitor = "ab" * 16
    response = get(routes, "/i", "s=shop", {"cookie": f"tp_vid={visitor}{suffix}"})
    [set_cookie] = header(response, "Set-Cookie")
    assert VISITOR_COOKIE.fullmatch(set_cookie) and set_cookie.startswith(f"tp_vid={visitor};")
    assert events(sink)[0]["device_id"] == visitor


def test_injected_visitor_id_in_a_collect_event_is_dead_lettered_and_never_a_cookie(
    routes: Routes, sink: MemorySink, metrics: Metrics
) -> None:
    event = {"site": "shop", "visitor_id": "ab" * 16 + "\r\nSet-Cookie: evil=1"}
    response = post(routes, "/collect", event)
    assert response.status == 200
    assert [r["code"] for r in orjson.loads(response.body)["rejected"]] == ["invalid"]
    assert header(response, "Set-Cookie") == []  # nothing stored: no cookie at all
    [letter] = events(sink, DEAD)
    assert letter["reason"] == "invalid" and "visitor_id" in letter["detail"]
    assert orjson.loads(letter["raw"])["visitor_id"] == event["visitor_id"]  # inert data
    assert metrics.get("dead_letters_total", reason="invalid", source="collect") == 1


@pytest.mark.parametrize("separator", [b"\r", b"\n"])
def test_bare_cr_or_lf_in_a_cookie_header_is_refused_by_the_http_parser(
    server: int, sink: MemorySink, metrics: Metrics, separator: bytes
) -> None:
    request = (
        b"GET /i?s=shop HTTP/1.1\r\nHost: x\r\nCookie: tp_vid=x"
        + separator
        + b"Set-Cookie: evil=1\r\n\r\n"
    )
    status, headers, _ = exchange(server, request)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert all(b"evil" not in v for _, v in headers) and b"set-cookie" not in dict(headers)
    assert dict(sink.records) == {}
    assert metrics.get("requests_refused_total", reason="malformed") == 1


# Forged redirect signatures (tests/unit/collector/test_email.py has more tampered links)


def _signed(campaign: str = "winter", target: str = "https://shop.example/a") -> dict:
    link = sign_link("https://t.example", LINK_KEY, "shop", campaign, "user-7", target)
    return dict(parse_qsl(urlsplit(link).query))


def _forged() -> dict[str, dict[str, str]]:
    good = _signed()
    flipped = good["sig"][:-1] + ("A" if good["sig"][-1] != "A" else "B")
    opened = dict(parse_qsl(urlsplit(sign_link("x", LINK_KEY, "shop", "winter", "user-7")).query))
    crlf = "https://shop.example/\r\nSet-Cookie: evil=1"
    return {
        "tampered target": {**good, "u": "https://evil.example/"},
        "tampered signature": {**good, "sig": flipped},
        "missing signature": {k: v for k, v in good.items() if k != "sig"},
        "another campaign's signature": {**good, "c": "summer"},
        "signature of another campaign's link": {**good, "sig": _signed("summer")["sig"]},
        "open-pixel signature used for a click": {**opened, "u": good["u"]},
        "header-splitting target, signed with the real key": {
            **good,
            "u": crlf,
            "sig": signature(LINK_KEY, "shop", "winter", "user-7", crlf),
        },
    }


@pytest.mark.parametrize("forgery", _forged())
def test_forged_click_link_gets_400_never_a_location_and_a_dead_letter(
    routes: Routes, sink: MemorySink, metrics: Metrics, forgery: str
) -> None:
    response = get(routes, "/e/c", urlencode(_forged()[forgery]))
    assert response.status == 400
    assert header(response, "Location") == [] and header(response, "Set-Cookie") == []
    assert orjson.loads(response.body)["code"] == "bad_signature"
    assert stored(sink) == []
    assert [x["reason"] for x in events(sink, DEAD)] == ["bad_signature"]
    assert metrics.get("dead_letters_total", reason="bad_signature", source="email") == 1
    assert metrics.get("responses_refused_total", path="/e/c", status="400") == 1


def test_the_genuine_link_still_redirects(routes: Routes) -> None:
    # The forgeries above differ from this one by one field: the 400s are not blanket 400s.
    response = get(routes, "/e/c", urlencode(_signed()))
    assert response.status == 302 and header(response, "Location") == ["https://shop.example/a"]


# SQL-like strings: accepted as data, delivered byte for byte. That ClickHouse stores and
# returns them unchanged is tests/integration/test_warehouse.py (its HOSTILE string is here).


SQL = [
    "x'); DROP TABLE events; --",
    "1' OR '1'='1",
    "'; SELECT * FROM system.users FORMAT TSV; --",
    "\\'); INSERT INTO events VALUES (1); /*",
    "x'); DROP TABLE events; --\\\n\t\"é😀",
]


@pytest.mark.parametrize("sql", SQL)
def test_sql_like_strings_in_every_pixel_field_are_kept_byte_for_byte(
    routes: Routes, sink: MemorySink, sql: str
) -> None:
    free = {"u": "url", "r": "referrer", "uid": "user_id", "did": "device_id"}
    free |= {"cat": "category", "pid": "product_id", "cmp": "campaign", "aid": "advertising_id"}
    query = urlencode({"s": "shop", "cs": "analytics,advertising"} | dict.fromkeys(free, sql))
    response = get(routes, "/i", query, {"user-agent": CHROME})
    assert (response.status, response.body) == (200, PIXEL_GIF)
    [(key, _)] = sink.records[RAW]
    [event] = events(sink)
    assert {field: event[field] for field in free.values()} == dict.fromkeys(free.values(), sql)
    assert key == sql.encode()  # the Kafka key too


@pytest.mark.parametrize("sql", SQL)
def test_sql_like_strings_in_constrained_pixel_fields_are_dead_lettered_as_data(
    routes: Routes, sink: MemorySink, metrics: Metrics, sql: str
) -> None:
    for name in ("s", "e", "cur", "cs"):
        query = urlencode({"s": "shop", name: sql})
        assert get(routes, "/i", query).body == PIXEL_GIF
    letters = events(sink, DEAD)
    assert [x["reason"] for x in letters] == ["invalid"] * 4
    assert all(sql in unquote_plus(x["raw"]) for x in letters)
    assert stored(sink) == []
    assert metrics.get("dead_letters_total", reason="invalid", source="pixel") == 4


@pytest.mark.parametrize("sql", SQL)
def test_sql_like_strings_in_every_collect_field_are_kept_byte_for_byte(
    routes: Routes, sink: MemorySink, sql: str
) -> None:
    free = ["url", "referrer", "user_id", "device_id", "advertising_id", "category"]
    free += ["product_id", "campaign", "timezone", "message_id"]
    event = dict.fromkeys(free, sql) | {
        "site": "shop",
        "locale": sql[:35],  # its limit
        "title": sql,
        "consent": ["analytics", "advertising"],
        "props": {sql: sql, "list": [sql, {sql: [sql]}]},
    }
    response = post(routes, "/collect", event)
    assert orjson.loads(response.body) == {"ok": True, "accepted": 1, "rejected": []}
    [got] = events(sink)
    assert {k: got[k] for k in free} == dict.fromkeys(free, sql)
    assert (got["page_title"], got["locale"]) == (sql, sql[:35])
    assert got["props"] == event["props"]
    # Fields with a format refuse it, as data in a dead letter: nothing else happens.
    for name in ("type", "site", "currency", "visitor_id"):
        refused = post(routes, "/collect", {"site": "shop", name: sql})
        assert orjson.loads(refused.body)["rejected"][0]["code"] == "invalid"
    letters = events(sink, DEAD)
    assert [orjson.loads(x["raw"]) for x in letters] == [
        {"site": "shop", name: sql} for name in ("type", "site", "currency", "visitor_id")
    ]


@pytest.mark.parametrize("sql", SQL)
def test_sql_like_strings_in_every_segment_field_are_kept_byte_for_byte(
    routes: Routes, sink: MemorySink, sql: str
) -> None:
    page = {"url": sql, "referrer": sql, "title": sql}
    campaign = dict.fromkeys(("name", "source", "medium", "term", "content"), sql)
    message = {
        "userId": sql,
        "anonymousId": sql,
        "event": sql,
        "messageId": sql,
        "properties": {**page, "category": sql, "product_id": sql, sql: [sql]},
        "context": {
            "page": page,
            "campaign": campaign,
            "device": {"id": sql, "advertisingId": sql},
            "locale": sql[:35],  # its limit
            "timezone": sql,
            "userAgent": sql,
            "consent": {"categoryPreferences": {"analytics": True, "advertising": True}},
        },
    }
    response = post(routes, "/v1/track", message, AUTH)
    assert (response.status, orjson.loads(response.body)) == (200, {"success": True})
    [got] = stored(sink)
    fields = ["user_id", "device_id", "advertising_id", "url", "referrer", "page_title"]
    fields += ["category", "product_id", "campaign", "timezone", "message_id"]
    fields += ["user_agent", "utm_source", "utm_medium", "utm_term", "utm_content"]
    assert {k: got[k] for k in fields} == dict.fromkeys(fields, sql)
    assert got["locale"] == sql[:35]
    assert got["props"][sql] == [sql] and got["props"]["event"] == sql
    # The event name becomes an identifier: only [a-z0-9_] of it survives.
    assert re.fullmatch(r"[a-z][a-z0-9_]*", got["event_type"])


# Read API keys: what tests/unit/streams/test_read_keys.py does not cover.


def test_read_api_compares_every_key_whatever_matched(monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.signals_views as views

    compared: list[bytes] = []

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return a == b

    monkeypatch.setattr(views.hmac, "compare_digest", spy)
    keys = views.api_keys(Settings(_env_file=None, read_api_keys=SecretStr("k1,k2,k3")))
    for given, allowed in (("k1", True), ("k3", True), ("k0", False), ("", False)):
        compared.clear()
        request = SimpleNamespace(headers={"Authorization": f"Bearer {given}"})
        assert views.read_authorized(keys, request) is allowed
        assert compared == keys  # no early exit: the time taken says nothing about the keys


def test_read_api_key_in_the_query_string_or_another_scheme_is_refused() -> None:
    from streams.signals_views import api_keys, read_authorized

    keys = api_keys(Settings(_env_file=None, read_api_keys=SecretStr("k1")))
    query = {"api_key": "k1", "key": "k1", "token": "k1", "access_token": "k1"}
    for request in (
        SimpleNamespace(headers={}, query=query),  # keys in URLs end up in logs
        SimpleNamespace(headers={"Authorization": "Basic " + base64.b64encode(b"k1:").decode()}),
        SimpleNamespace(headers={"Authorization": "Bearer k1 "}),
        SimpleNamespace(headers={"Authorization": "Bearer \x00k1"}),
        SimpleNamespace(headers={"Authorization": "Bearer k1é"}),  # non-ASCII: no exception
        SimpleNamespace(headers={"X-API-Key": "K1"}),
    ):
        assert not read_authorized(keys, request)


def test_erase_api_without_or_with_a_wrong_admin_key_is_refused() -> None:
    from streams.views import authorized

    def request(value: str | None) -> SimpleNamespace:
        return SimpleNamespace(headers={} if value is None else {"Authorization": value})

    unset = Settings(_env_file=None)
    assert not authorized(unset, request("Bearer ")) and not authorized(unset, request(None))
    admin = Settings(_env_file=None, admin_api_key=SecretStr("adm"))
    assert authorized(admin, request("Bearer adm"))
    for wrong in (None, "", "Bearer", "Bearer ", "Bearer ad", "Bearer adm2", "adm", "Bearer é"):
        assert not authorized(admin, request(wrong)), wrong
