"""The official Segment Python SDK, unchanged, pointed at a collector on real Kafka."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from segment.analytics import Client

from tests.integration.collector_process import collector, collector_overrides, decode_event
from trackpipe.kafka_admin import read_all

pytestmark = pytest.mark.integration

KEY = "wk_test_shop"
N_USERS = 60


def test_segment_sdk_calls_reach_kafka_with_ids_and_times(
    kafka_bootstrap: str, uid: str, tmp_path: Path
) -> None:
    overrides = collector_overrides(kafka_bootstrap, uid, segment_write_keys={"shop": KEY})
    errors: list[object] = []
    when = datetime.now(tz=UTC) - timedelta(hours=1)
    with collector(overrides, tmp_path / "logs") as url:
        client = Client(KEY, host=url, on_error=lambda e, batch: errors.append(e), gzip=False)
        gz = Client(KEY, host=url, on_error=lambda e, batch: errors.append(e), gzip=True)
        for i in range(N_USERS):
            sdk = gz if i % 2 else client
            user = f"user-{i}"
            sdk.identify(user, {"email": f"Person.{i}@Example.com", "plan": "pro"})
            sdk.page(user, category="shoes", name="Home", properties={"url": "https://s.ex/"})
            sdk.track(
                user,
                "Order Completed",
                {"revenue": 10.0 + i, "currency": "EUR"},
                timestamp=when,
                message_id=f"msg-{i}",
            )
            sdk.screen(anonymous_id=f"anon-{i}", name="Cart")
            sdk.alias(f"anon-{i}", user)
            sdk.group(user, "acme", {"size": 3})
        for sdk in (client, gz):
            sdk.flush()
            sdk.shutdown()
        refused: list[object] = []
        wrong = Client(
            "wrong-key", host=url, on_error=lambda e, b: refused.append(e), max_retries=0
        )
        wrong.track("intruder", "Nope")
        wrong.flush()
        wrong.shutdown()
    assert errors == []
    assert [getattr(e, "status", None) for e in refused] == [401]
    events = [decode_event(v) for _, v in read_all(kafka_bootstrap, f"raw-{uid}", idle_s=1.5)]
    assert read_all(kafka_bootstrap, f"dead-{uid}", idle_s=0.5) == []
    by_type: dict[str, list[dict]] = {}
    for event in events:
        by_type.setdefault(event["event_type"], []).append(event)
    assert {t: len(v) for t, v in by_type.items()} == {
        t: N_USERS for t in ("identify", "page_view", "purchase", "screen_view", "alias", "group")
    }
    assert all(e["site_id"] == "shop" and e["source"] == "segment" for e in events)
    assert "intruder" not in str(events)
    purchases = sorted(by_type["purchase"], key=lambda e: int(e["message_id"].split("-")[1]))
    assert [p["message_id"] for p in purchases] == [f"msg-{i}" for i in range(N_USERS)]
    assert [p["revenue"] for p in purchases] == [10.0 + i for i in range(N_USERS)]
    expected_ms = int(when.timestamp() * 1000)
    # Same clock on both sides: the skew correction adds only the upload delay.
    assert all(0 <= p["ts_ms"] - expected_ms < 60_000 for p in purchases)
    hashes = {e["user_id"]: e["email_hash"] for e in by_type["identify"]}
    assert hashes["user-3"] == hashlib.sha256(b"person.3@example.com").hexdigest()
    assert "Example.com" not in str(events)


def test_rudderstack_sdk_gzip_batches_reach_kafka(
    kafka_bootstrap: str, uid: str, tmp_path: Path
) -> None:
    from rudderstack.analytics import Client as RudderClient

    overrides = collector_overrides(kafka_bootstrap, uid, segment_write_keys={"shop": KEY})
    errors: list[object] = []
    with collector(overrides, tmp_path / "logs") as url:
        # RudderStack's SDK gzips every batch by default.
        client = RudderClient(KEY, host=url, on_error=lambda e, batch: errors.append(e))
        for i in range(40):
            client.track(f"user-{i}", "Product Added", {"product_id": f"p{i}"}, message_id=f"r-{i}")
            client.page(anonymous_id=f"anon-{i}", name="Home")
        client.shutdown()
    assert errors == []
    events = [decode_event(v) for _, v in read_all(kafka_bootstrap, f"raw-{uid}", idle_s=1.5)]
    carts = [e for e in events if e["event_type"] == "add_to_cart"]
    assert sorted(e["message_id"] for e in carts) == sorted(f"r-{i}" for i in range(40))
    assert {e["product_id"] for e in carts} == {f"p{i}" for i in range(40)}
    assert sum(e["event_type"] == "page_view" for e in events) == 40
