"""Property-based: whatever arrives, never a 5xx, never an exception, nothing unaccounted.

For every request: events accepted (raw + bots topics) + dead letters + consent drops equals
the events the request carried (one per pixel or unreadable body, one per batch item).

Example counts come from the loaded hypothesis profile (tests/conftest.py): "ci" by default,
"long" (20x) with `make fuzz`. Every crash found is kept as a plain test at the end.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.http import Request
from collector.metrics import Metrics
from collector.server import build_routes
from collector.sinks.memory import MemorySink
from tests.unit.collector.helpers import BOTS, DEAD, RAW, events
from trackpipe.settings import Settings

KEY = "wk_prop"
AUTH = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
MAX_BATCH = 5
# max_examples from the loaded profile; no deadline: a Harness per example is slow to build.
PROFILE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    st.text(max_size=30),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.booleans(),
    st.none(),
    st.sampled_from(
        [
            "shop",
            "page_view",
            "EUR",
            "1764000000000",
            "https://a.example/?utm_medium=cpc",
            "Googlebot/2.1",
            "analytics",
            "ab" * 16,
        ]
    ),
    st.lists(st.sampled_from(["analytics", "advertising", "x"]), max_size=3),
)
collect_event = st.dictionaries(
    st.sampled_from(
        [
            "type",
            "site",
            "url",
            "referrer",
            "ts",
            "sent_at",
            "consent",
            "email",
            "revenue",
            "currency",
            "visitor_id",
            "device_id",
            "props",
            "advertising_id",
            "unexpected",
        ]
    ),
    field_values,
    max_size=8,
).map(lambda d: {"site": "shop", **d})
segment_message = st.dictionaries(
    st.sampled_from(
        [
            "type",
            "userId",
            "anonymousId",
            "event",
            "name",
            "timestamp",
            "sentAt",
            "properties",
            "traits",
            "context",
            "messageId",
            "previousId",
            "groupId",
        ]
    ),
    st.one_of(
        field_values,
        st.sampled_from(["track", "page", "identify", "2026-01-01T00:00:00Z"]),
        json_values,
    ),
    max_size=8,
)
# Mostly well-formed messages with random extras, so the accepting path is exercised too.
plausible_segment = st.builds(
    lambda base, extra: {**extra, **base},
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["track", "page", "screen", "identify", "alias", "group"]),
            "userId": st.text(min_size=1, max_size=10),
            "event": st.text(min_size=1, max_size=20),
        }
    ),
    segment_message,
)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40)
headers = st.fixed_dictionaries(
    {},
    optional={
        "cookie": st.one_of(header_values, st.just("tp_optout=1"), st.just("tp_vid=" + "ab" * 16)),
        "sec-gpc": st.sampled_from(["1", "0", ""]) | header_values,
        "dnt": st.sampled_from(["1", "0"]) | header_values,
        "origin": st.sampled_from(["https://shop.example", "null"]) | header_values,
        "user-agent": st.sampled_from(["curl/8", "Mozilla/5.0 (iPhone)"]) | header_values,
        "content-encoding": st.sampled_from(["gzip", "identity"]) | header_values,
        "x-forwarded-for": header_values,
        "content-type": st.sampled_from(["text/plain", "application/json"]) | header_values,
    },
)


class Harness:
    def __init__(self, **overrides: Any) -> None:
        self.sink, self.metrics = MemorySink(), Metrics()
        self.settings = Settings(
            _env_file=None,
            segment_write_keys={"shop": KEY},
            max_batch_events=MAX_BATCH,
            email_link_key="k",
            cors_origins=["https://shop.example"],
            trust_forwarded_for=True,
            **overrides,
        )
        self.routes = build_routes(self.settings, self.sink, self.metrics)

    def outcomes(self) -> int:
        stored = sum(len(self.sink.records[t]) for t in (RAW, BOTS, DEAD))
        dropped = sum(
            value
            for (name, _), value in self.metrics._counts.items()
            if name == "consent_dropped_total"
        )
        return stored + dropped

    def send(
        self, method: str, path: str, query: str, hdrs: dict[str, str], body: bytes, carried: int
    ) -> int:
        before = self.outcomes()
        response = self.routes(Request(method, path, query, hdrs, body, "203.0.113.5"))
        assert response.status < 500, response.body
        assert self.outcomes() - before == carried, (path, response.status, response.body)
        events(self.sink, RAW), events(self.sink, BOTS)  # each record exactly an Event's dump
        return response.status


def items_in(body: bytes, batch_key: str | None) -> int:
    """How many events a JSON body carries, as the endpoints count them."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 1
    if batch_key is not None:
        document = document.get(batch_key) if isinstance(document, dict) else None
        if not isinstance(document, list):
            return 1
    if isinstance(document, list):
        return len(document) if 0 < len(document) <= MAX_BATCH else 1
    return 1


@PROFILE
@given(query=st.text(max_size=200), hdrs=headers, path=st.sampled_from(["/i", "/e/o", "/e/c"]))
def test_any_query_string(query: str, hdrs: dict[str, str], path: str) -> None:
    Harness().send("GET", path, query, hdrs, b"", 1)


@PROFILE
@given(
    params=st.dictionaries(
        st.sampled_from(
            ["s", "e", "u", "r", "uid", "em", "did", "rev", "cur", "ts", "cs", "aid", "c", "sig"]
        ),
        st.text(max_size=40) | st.sampled_from(["shop", "9.5", "1764000000000", "analytics"]),
    ),
    hdrs=headers,
)
def test_any_pixel_parameters(params: dict[str, str], hdrs: dict[str, str]) -> None:
    from urllib.parse import urlencode

    Harness(consent_missing="drop").send("GET", "/i", urlencode(params), hdrs, b"", 1)


@PROFILE
@given(
    payload=st.one_of(collect_event, st.lists(collect_event, max_size=7), json_values),
    hdrs=headers,
)
def test_any_collect_body(payload: Any, hdrs: dict[str, str]) -> None:
    body = orjson.dumps(payload)
    hdrs = {k: v for k, v in hdrs.items() if k != "content-encoding"}
    Harness().send("POST", "/collect", "", hdrs, body, items_in(body, None))


@PROFILE
@given(raw=st.binary(max_size=300), hdrs=headers)
def test_any_bytes_as_a_body(raw: bytes, hdrs: dict[str, str]) -> None:
    gzip = hdrs.get("content-encoding", "").strip().lower() == "gzip"
    carried = 1 if gzip or not raw.strip() else items_in(raw, None)
    Harness().send("POST", "/collect", "", hdrs, raw, carried)


@PROFILE
@given(
    path=st.sampled_from(["/v1/track", "/v1/page", "/v1/identify", "/v1/alias", "/v1/batch"]),
    messages=st.lists(plausible_segment | segment_message, max_size=7),
    sent_at=st.none() | st.sampled_from(["2026-01-01T00:00:00Z", "garbage", "1999-01-01"]),
    hdrs=headers,
)
def test_any_segment_call(path: str, messages: list[Any], sent_at: Any, hdrs: dict) -> None:
    hdrs = {k: v for k, v in hdrs.items() if k != "content-encoding"} | {"authorization": AUTH}
    if path == "/v1/batch":
        document: Any = {"batch": messages, "sentAt": sent_at}
        body = orjson.dumps(document)
        carried = items_in(body, "batch")
    else:
        document = messages[0] if messages else {}
        body = orjson.dumps(document)
        carried = 1
    Harness().send("POST", path, "", hdrs, body, carried)


@PROFILE
@given(hdrs=headers, auth=header_values)
def test_segment_without_a_valid_key_is_refused_and_stores_nothing(hdrs, auth: str) -> None:
    body = orjson.dumps({"userId": "u", "event": "e"})
    status = Harness().send("POST", "/v1/track", "", {**hdrs, "authorization": auth}, body, 0)
    assert status in (401, 400, 413)


@PROFILE
@given(
    params=st.fixed_dictionaries(
        {"s": st.just("shop"), "c": st.text(max_size=10), "r": st.text(max_size=10)},
        optional={
            "u": st.sampled_from(["https://shop.example/", "javascript:x", "//evil"])
            | st.text(max_size=30),
            "sig": st.text(max_size=30),
        },
    ),
    path=st.sampled_from(["/e/o", "/e/c"]),
    hdrs=headers,
)
def test_any_email_link(params: dict[str, str], path: str, hdrs: dict[str, str]) -> None:
    from urllib.parse import urlencode

    status = Harness().send("GET", path, urlencode(params), hdrs, b"", 1)
    assert status == (200 if path == "/e/o" else 400)  # no forged link ever redirects


@PROFILE
@given(
    path=st.sampled_from(["/collect", "/v1/track"]),
    levels=st.integers(1, 1500),
    opener=st.sampled_from(['{"a":', "["]),
)
def test_any_nesting_depth_in_properties(path: str, levels: int, opener: str) -> None:
    # Built as bytes: past 254 levels orjson could not encode it here either.
    leaf, closer = ("1", "}") if opener == '{"a":' else ("", "]")
    deep = (opener * levels + leaf + closer * levels).encode()
    if path == "/collect":
        body = b'{"site": "shop", "props": {"d": ' + deep + b"}}"
    else:
        body = b'{"userId": "u", "event": "e", "properties": {"d": ' + deep + b"}}"
    Harness().send("POST", path, "", {"authorization": AUTH}, body, 1)


# Crashes found, kept as regression tests.


def test_regression_props_nested_deeper_than_orjson_can_write() -> None:
    # orjson reads 1024 levels but writes 254: props between the two were accepted, then
    # failed to encode (500, the event lost and no dead letter).
    deep = b"[" * 300 + b"]" * 300
    event = b'{"site": "shop", "props": {"a": ' + deep + b"}}"
    message = b'{"type": "track", "userId": "u", "event": "e", "properties": {"a": ' + deep + b"}}"
    for path, body in [
        ("/collect", event),
        ("/collect", b"[" + event + b"]"),
        ("/v1/track", message),
        ("/v1/batch", b'{"batch": [' + message + b"]}"),
    ]:
        harness = Harness()
        assert harness.send("POST", path, "", {"authorization": AUTH}, body, 1) == 400, path
        [letter] = [orjson.loads(v) for _, v in harness.sink.records[DEAD]]
        assert letter["reason"] == "unparsable" and "nested deeper" in letter["detail"]
