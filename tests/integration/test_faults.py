"""Faults on real servers while beacons keep arriving: nothing lost, nothing doubled.

Each test is bounded in time and stops what it started. Figures (events, outage, outcome) are
recorded in docs/reliability.md by `make reliability`.
"""

from __future__ import annotations

import http.client
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Stack, _overrides
from trackpipe.processes import Pipeline, start_trackpipe, stop, wait_http
from trackpipe.reliability import record

pytestmark = [pytest.mark.integration, pytest.mark.faults]


class Beacons(threading.Thread):
    """Sends `count` pixels with unique URLs at `rate`/s; remembers every one answered."""

    def __init__(self, port: int, count: int, rate: float, run: str) -> None:
        super().__init__(daemon=True)
        self.port, self.count, self.rate, self.run_id = port, count, rate, run
        self.answered: list[str] = []

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        start = time.monotonic()
        for i in range(self.count):
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            url = f"/{self.run_id}/{i}"
            conn.request("GET", f"/i?s=faults&u={url}")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                self.answered.append(url)
        conn.close()


def stored_urls(stack: Stack) -> tuple[list[str], int]:
    with stack.warehouse() as wh:
        db = wh.database
        urls = [r[0] for r in wh.query(f"SELECT url FROM {db}.events FINAL")]
        [(raw,)] = wh.query(f"SELECT count() FROM {db}.events")
    return urls, raw


def account(
    stack: Stack, beacons: Beacons, fault: str, started: float, notes: str | None = None
) -> tuple[int, int]:
    """Compare what the collector acknowledged with what ClickHouse holds; record the figures."""
    urls, raw = stored_urls(stack)
    lost = len(set(beacons.answered) - set(urls))
    doubled = len(urls) - len(set(urls))
    record(
        fault,
        f"{len(beacons.answered)} beacons at {beacons.rate:g}/s",
        time.monotonic() - started,
        lost,
        doubled,
        notes or f"{raw - len(urls)} re-inserted rows collapsed by FINAL",
    )
    return lost, doubled


def wait_for_rows(stack: Stack, expected: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with stack.warehouse() as wh:
        while time.monotonic() < deadline:
            [(n,)] = wh.query(f"SELECT uniqExact(event_id) FROM {wh.database}.events")
            if n >= expected:
                return
            time.sleep(0.5)


def test_worker_killed_mid_stream_loses_and_doubles_nothing(
    kafka_bootstrap: str, clickhouse_db: str, uid: str, tmp_path: Path
) -> None:
    o = _overrides(uid, kafka_bootstrap, clickhouse_db, tmp_path)
    stack = Stack("kafka+clickhouse", o)
    started = time.monotonic()
    with Pipeline(o, tmp_path / "logs") as pipeline:
        beacons = Beacons(int(o["collector_port"]), 3000, 300, uid)
        beacons.start()
        assert pipeline.wait_rows_written(600, timeout_s=60) >= 600
        assert pipeline.worker is not None
        stop(pipeline.worker, signal.SIGKILL)  # mid-stream, mid-batch, no goodbye
        pipeline.worker = start_trackpipe("worker", ["worker"], o, tmp_path / "logs")
        wait_http(pipeline.worker, f"{pipeline.worker_url}/stats/")
        beacons.join(timeout=60)
        wait_for_rows(stack, len(beacons.answered), timeout_s=90)
    assert len(beacons.answered) == 3000
    assert account(stack, beacons, "worker SIGKILL mid-stream, restarted", started) == (0, 0)


def test_clickhouse_down_for_a_minute_loses_and_doubles_nothing(
    kafka_bootstrap: str, own_clickhouse, uid: str, tmp_path: Path
) -> None:
    port, http_port, control = own_clickhouse
    url = f"clickhouse://127.0.0.1:{port}/f_{uid}?http_port={http_port}"
    o = _overrides(uid, kafka_bootstrap, url, tmp_path)
    stack = Stack("own", o)
    started = time.monotonic()
    with Pipeline(o, tmp_path / "logs") as pipeline:
        beacons = Beacons(int(o["collector_port"]), 6000, 75, uid)  # 80 s of traffic
        beacons.start()
        assert pipeline.wait_rows_written(300, timeout_s=60) >= 300
        control("stop")
        time.sleep(60)
        failures = pipeline.worker_stats()["insert_failures"]
        control("start")
        beacons.join(timeout=120)
        wait_for_rows(stack, len(beacons.answered), timeout_s=120)
    notes = f"{failures} insert attempts failed and were retried; caught up after restart"
    assert failures > 0
    assert len(beacons.answered) == 6000
    assert account(stack, beacons, "ClickHouse stopped for 60 s", started, notes) == (0, 0)


def test_workers_leaving_and_joining_mid_stream_lose_and_double_nothing(
    kafka_bootstrap: str, clickhouse_db: str, uid: str, tmp_path: Path
) -> None:
    from trackpipe.processes import free_port

    o = _overrides(uid, kafka_bootstrap, clickhouse_db, tmp_path)
    stack = Stack("kafka+clickhouse", o)
    logs = tmp_path / "logs"
    started = time.monotonic()

    def second_worker(name: str):
        port = free_port()
        proc = start_trackpipe(
            name,
            ["worker"],
            o | {"worker_web_port": port, "worker_data_dir": tmp_path / name},
            logs,
        )
        wait_http(proc, f"http://127.0.0.1:{port}/stats/")
        return proc

    with Pipeline(o, logs) as pipeline:
        beacons = Beacons(int(o["collector_port"]), 3000, 250, uid)
        beacons.start()
        joining = second_worker("worker-b")  # a rebalance while events flow
        assert pipeline.wait_rows_written(300, timeout_s=60) >= 300
        assert pipeline.worker is not None
        stop(pipeline.worker, signal.SIGINT)  # the first one leaves: another rebalance
        pipeline.worker = None
        late = second_worker("worker-c")  # and a third joins
        beacons.join(timeout=60)
        wait_for_rows(stack, len(beacons.answered), timeout_s=90)
        stop(joining, signal.SIGINT)
        stop(late, signal.SIGINT)
    assert len(beacons.answered) == 3000
    assert account(
        stack, beacons, "rebalance: a worker joins, the first leaves, a third joins", started
    ) == (0, 0)
