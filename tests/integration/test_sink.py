"""The warehouse sink on its own: redelivery after a crash, refused rows, warehouse outages."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from schemas.events import Event
from tests.integration.conftest import Stack
from trackpipe.kafka_admin import ensure_topics, read_all
from trackpipe.processes import (
    free_port,
    http_get,
    run_trackpipe,
    start_trackpipe,
    stop,
    wait_http,
)
from trackpipe.settings import Settings

pytestmark = pytest.mark.integration


def make_events(n: int, start: int = 0) -> list[Event]:
    return [
        Event(
            event_id=uuid.uuid4().hex,
            event_type="page_view",
            site_id="shop",
            device_id=f"d{i % 13}",
            device_kind="cookie",
            ts_ms=1_764_000_000_000 + i,
            received_ms=1_764_000_000_000 + i,
            url=f"https://shop/{start + i}",
        )
        for i in range(n)
    ]


def produce(overrides: dict[str, object], values: list[bytes]) -> None:
    settings = Settings(
        _env_file=None,
        **{
            k: v
            for k, v in overrides.items()
            if k in ("kafka_bootstrap", "topic_raw", "topic_dead")
        },
    )
    ensure_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for i, value in enumerate(values):
        producer.send(settings.topic_raw, key=f"d{i % 13}".encode(), value=value)
    producer.flush(30)
    producer.close()


def start_worker(overrides: dict[str, object], logs: Path):
    worker = start_trackpipe("worker", ["worker"], overrides, logs)
    wait_http(worker, f"http://127.0.0.1:{overrides['worker_web_port']}/stats/")
    return worker


def wait_stat(overrides: dict[str, object], name: str, at_least: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    value = 0
    while time.monotonic() < deadline:
        status, body = http_get(f"http://127.0.0.1:{overrides['worker_web_port']}/stats/")
        value = orjson.loads(body)[name] if status == 200 else value
        if value >= at_least:
            break
        time.sleep(0.2)
    return value


def counts(stack: Stack) -> tuple[int, int, int]:
    with stack.warehouse() as wh:
        db = wh.database
        [(raw,)] = wh.query(f"SELECT count() FROM {db}.events")
        [(final,)] = wh.query(f"SELECT count() FROM {db}.events FINAL")
        [(distinct,)] = wh.query(f"SELECT uniqExact(event_id) FROM {db}.events")
    return raw, final, distinct


def test_a_batch_redelivered_after_a_crash_is_not_duplicated(stack: Stack, tmp_path: Path) -> None:
    events = make_events(300)
    run_trackpipe(["migrate"], stack.overrides)
    produce(stack.overrides, [orjson.dumps(e.model_dump()) for e in events])
    crashing = stack.overrides | {
        "sink_failpoint": "exit-after-insert",
        "sink_batch_size": 1000,
        "sink_batch_seconds": 2.0,
    }
    worker = start_trackpipe("worker", ["worker"], crashing, tmp_path / "logs")
    # It inserts the whole batch, then dies before committing the offsets.
    assert worker.popen.wait(timeout=90) == 70, worker.tail()
    worker = start_worker(stack.overrides, tmp_path / "logs")
    try:
        assert wait_stat(stack.overrides, "rows_written", 300) == 300  # all redelivered
    finally:
        stop(worker, signal.SIGINT)
    raw, final, distinct = counts(stack)
    assert raw >= 300 and final == distinct == 300


def test_rows_the_warehouse_refuses_are_dead_lettered_and_the_rest_written(
    stack: Stack, tmp_path: Path
) -> None:
    events = [e.model_dump() for e in make_events(50)]
    events[17]["revenue"] = "lots"  # valid JSON, but not a Float64
    values = [orjson.dumps(e) for e in events] + [b"{not json"]
    run_trackpipe(["migrate"], stack.overrides)
    produce(stack.overrides, values)
    worker = start_worker(stack.overrides, tmp_path / "logs")
    try:
        assert wait_stat(stack.overrides, "rows_written", 49) == 49
        assert wait_stat(stack.overrides, "dead_letters", 2) == 2
    finally:
        stop(worker, signal.SIGINT)
    letters = [
        orjson.loads(v) for _, v in read_all(stack.bootstrap, str(stack.overrides["topic_dead"]))
    ]
    assert sorted(d["reason"] for d in letters) == ["sink_rejected", "warehouse_rejected"]
    refused = next(d for d in letters if d["reason"] == "warehouse_rejected")
    assert orjson.loads(refused["raw"])["event_id"] == events[17]["event_id"]
    _raw, final, distinct = counts(stack)
    assert final == distinct == 49


def test_sink_backs_off_while_clickhouse_is_down_and_catches_up(
    kafka_bootstrap: str, own_clickhouse, uid: str, tmp_path: Path
) -> None:
    port, http, control = own_clickhouse
    o: dict[str, object] = {
        "kafka_bootstrap": kafka_bootstrap,
        "topic_raw": f"raw-{uid}",
        "topic_dead": f"dead-{uid}",
        "app_id": f"sink-{uid}",
        "warehouse_url": f"clickhouse://127.0.0.1:{port}/t_{uid}?http_port={http}",
        "worker_web_port": free_port(),
        "sink_batch_seconds": 0.2,
        "kafka_session_timeout_s": 10,
    }
    run_trackpipe(["migrate"], o)
    produce(o, [orjson.dumps(e.model_dump()) for e in make_events(200)])
    worker = start_worker(o, tmp_path / "logs")
    try:
        assert wait_stat(o, "rows_written", 200) == 200
        control("stop")
        produce(o, [orjson.dumps(e.model_dump()) for e in make_events(300, start=200)])
        assert wait_stat(o, "insert_failures", 2) >= 2  # retrying, not dropping
        control("start")
        assert wait_stat(o, "rows_written", 500, timeout_s=90) == 500
    finally:
        stop(worker, signal.SIGINT)
    stack = Stack("own", o)
    _raw, final, distinct = counts(stack)
    assert final == distinct == 500
