"""A worker asked to stop while a stage holds input writes that input, then exits.

The identity and signals stages acknowledge a message only once a flush has written it, and
faust waits for every delivered message to be acknowledged before it lets a worker stop.
The holding stage's interval here is far longer than the test: what it applied is still held
when SIGINT arrives, so only the flush at shutdown (streams/app.py `flush_every`) can write
it. Before that flush existed, such a worker waited until it was killed.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.integration.conftest import Stack
from trackpipe.processes import Pipeline, stop
from trackpipe.traffic import generate, send_beacons

pytestmark = pytest.mark.integration

HOLD = 600.0  # seconds: no flush by the interval while the test runs


@pytest.mark.parametrize("holder", ["identity", "signals"])
def test_sigint_writes_what_a_stage_holds_and_the_worker_exits(
    stack: Stack, tmp_path: Path, holder: str
) -> None:
    overrides = stack.overrides | {f"{holder}_flush_seconds": HOLD}
    beacons = list(generate(20, seed=3))
    pipeline = Pipeline(overrides, tmp_path / "logs").start()
    try:
        assert send_beacons("127.0.0.1", int(overrides["collector_port"]), beacons) == len(beacons)
        assert pipeline.wait_rows_written(len(beacons), timeout_s=60) == len(beacons)
        identity, _ = pipeline.wait_worker(
            "/identity/",
            lambda s: (s.get("counters") or {}).get("events", 0) >= len(beacons),
            timeout_s=60,
        )
        assert identity["counters"]["events"] == len(beacons)
        if holder == "identity":
            assert identity["flushes"] == 0  # held: none of it written yet
        else:
            signals, _ = pipeline.wait_worker(
                "/signals/stats/", lambda s: s.get("messages", 0) > 0, timeout_s=60
            )
            assert signals["messages"] > 0 and signals["rows_written"] == 0  # held
        assert pipeline.collector is not None and pipeline.worker is not None
        stop(pipeline.collector)
        # 0, not -9: the worker stopped by itself, well before `stop` would kill it.
        assert stop(pipeline.worker, signal.SIGINT, timeout_s=40) == 0
    finally:
        pipeline.stop()
    with stack.warehouse() as wh:
        db = wh.database
        [(events,)] = wh.query(
            f"SELECT sum(events) FROM {db}.device_sessions FINAL WHERE superseded_by = ''"
        )
        [(profiles,)] = wh.query(f"SELECT uniqExact(person_id) FROM {db}.profiles")
    if holder == "identity":
        assert events == len(beacons)  # every applied event is in a device session row
    else:
        assert profiles > 0  # the batches the signals stage held were written
