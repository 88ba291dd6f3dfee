"""Tables recovered in bulk on real Kafka: a worker started on an existing changelog holds
exactly what the changelog says (last write wins, tombstones delete), read by the batch
loader; a restart after more writes holds the new state."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from streams.profiles import new_profile
from tests.integration.conftest import _overrides
from tests.integration.test_signals import read, stats
from trackpipe.processes import Proc, run_trackpipe, start_trackpipe, stop, wait_http

pytestmark = pytest.mark.integration

KEY = "reader-key"
PARTITIONS = 4


def profile(pid: str, buys: int) -> bytes:
    p = new_profile(pid)
    p["buys"], p["revenue"] = buys, float(buys)
    return orjson.dumps(p)


def write(bootstrap: str, topic: str, records: list[tuple[str, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for key, value in records:  # faust's partitioner for raw keys: the producer's default
        producer.send(topic, key=key.encode(), value=value)
    producer.flush(30)
    producer.close()


def lookup(o: dict, pid: str) -> tuple[int, dict]:
    return read(o, f"/signals/profiles/{pid}/")


@contextmanager
def recovered_worker(o: dict, logs: Path) -> Iterator[Proc]:
    """A worker, once its tables are recovered; stopped at the end."""
    proc = start_trackpipe("worker", ["worker"], o, logs)
    try:
        wait_http(proc, f"http://127.0.0.1:{o['worker_web_port']}/signals/stats/")
        deadline = time.monotonic() + 120
        while not stats(o)["recovered"]:
            assert proc.alive(), proc.tail()
            assert time.monotonic() < deadline, f"not recovered:\n{proc.tail()}"
            time.sleep(0.2)
        yield proc
    finally:
        stop(proc, signal.SIGINT)


def test_a_worker_recovers_its_tables_in_bulk(
    kafka_bootstrap: str, clickhouse_db: str, uid: str, tmp_path: Path
) -> None:
    o = _overrides(uid, kafka_bootstrap, clickhouse_db, tmp_path) | {
        "topic_attributed": f"attributed-{uid}",
        "topic_signals": f"signals-{uid}",
        "topic_partitions": PARTITIONS,
        "read_api_keys": KEY,
    }
    changelog = f"{o['app_id']}-signals-profiles-changelog"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(changelog, PARTITIONS, 1)])
    admin.close()
    many = [(f"p{i:03d}", profile(f"p{i:03d}", i)) for i in range(200)]
    write(kafka_bootstrap, changelog, [
        *many,
        ("kept", profile("kept", 1)),
        ("kept", profile("kept", 2)),  # the last write wins
        ("gone", profile("gone", 5)),
        ("gone", None),  # a tombstone deletes
        ("back", None),
        ("back", profile("back", 7)),  # a key written again after its tombstone
    ])  # fmt: skip
    run_trackpipe(["migrate"], o)

    with recovered_worker(o, tmp_path / "logs"):
        assert stats(o)["read_in_bulk"]["signals-profiles"] == 206
        assert lookup(o, "kept")[1]["value"]["purchases"] == 2
        assert lookup(o, "gone")[0] == 404
        assert lookup(o, "back")[1]["value"]["purchases"] == 7
        for pid, _ in many[::17]:
            status, body = lookup(o, pid)
            assert status == 200 and body["value"]["purchases"] == int(pid[1:]), (pid, body)

    # While the worker is down: more writes. A restart reads the whole changelog again.
    write(kafka_bootstrap, changelog, [("kept", profile("kept", 3)), ("back", None)])
    with recovered_worker(o, tmp_path / "logs2"):
        assert stats(o)["read_in_bulk"]["signals-profiles"] == 208
        assert lookup(o, "kept")[1]["value"]["purchases"] == 3
        assert lookup(o, "back")[0] == 404
        assert lookup(o, "p005")[1]["value"]["purchases"] == 5
