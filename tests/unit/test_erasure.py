from __future__ import annotations

import pytest

from collector.http import Request
from collector.metrics import Metrics
from collector.privacy import hash_email
from collector.server import build_routes
from collector.sinks.memory import MemorySink
from trackpipe.erasure import ErasureError, Identifier
from trackpipe.settings import Settings
from trackpipe.suppression import SuppressionList, suppression_key


def test_identifiers_parse_and_hash_emails() -> None:
    assert Identifier.parse("email: Jane@X.com") == Identifier("email", hash_email("jane@x.com"))
    assert Identifier.parse("user:u1") == Identifier("user", "u1")
    for bad in ("u1", "user:", "phone:123"):
        with pytest.raises(ErasureError):
            Identifier.parse(bad)


def test_suppression_keys_hold_no_identifier_in_clear() -> None:
    key = Identifier("user", "u1").suppression_key
    assert key == suppression_key("user", "u1") and "u1" not in key and len(key) == 64


def test_the_collector_drops_events_of_suppressed_identifiers() -> None:
    settings = Settings(_env_file=None)
    sink, metrics = MemorySink(), Metrics()
    suppressions = SuppressionList("", settings.topic_suppressions)
    suppressions.add([suppression_key("user", "gone"), suppression_key("device", "app-9")])
    routes = build_routes(settings, sink, metrics, suppressions)
    for query in ("s=shop&uid=gone", "s=shop&did=app-9", "s=shop&uid=stays"):
        assert routes(Request("GET", "/i", query, {}, b"", "10.0.0.1")).status == 200
    assert len(sink.records[settings.topic_raw]) == 1
    assert metrics.get("events_suppressed_total") == 2
