"""The kafka-python wrapper settles every record, even when the client never reports one.

A broker stopped with produce requests in flight left some kafka-python futures pending
for good (a clean-clone run of the broker-outage test): those records were never spooled.
The client here is a fake whose futures complete only when the test says so.
"""

from __future__ import annotations

import time

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.producer.future import FutureProduceResult, FutureRecordMetadata

from collector.sinks import kafka as kafka_sink
from collector.sinks.base import ProducerBusyError


class SilentClient:
    """kafka-python's producer as far as the wrapper uses it; reports only when told to."""

    fail_send: BaseException | None = None

    def __init__(self, **_config: object) -> None:
        self.futures: list[FutureRecordMetadata] = []

    def send(self, topic: str, key: bytes, value: bytes) -> FutureRecordMetadata:
        if self.fail_send is not None:
            raise self.fail_send
        produced = FutureProduceResult(None)
        future = FutureRecordMetadata(produced, 0, -1, None, len(key), len(value), -1)
        self.futures.append(future)
        return future

    def flush(self, timeout: float) -> None:
        pass

    def close(self, timeout: float) -> None:
        pass


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(kafka_sink, "KafkaProducer", SilentClient)
    p = kafka_sink.KafkaPythonProducer("k:9092", delivery_timeout_s=0.2, report_grace_s=0.1)
    yield p
    p.close(0)


def wait_until(check, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_records_without_a_report_fail_after_the_timeout_in_produce_order(producer) -> None:
    failed: list[tuple[str, bytes, bytes]] = []
    for n in range(5):
        producer.produce("raw", b"k%d" % n, b"v%d" % n, lambda e, *r: failed.append(r))
    assert producer.pending == 5
    # The watchdog gives up on its own, without anyone asking for `pending`.
    wait_until(lambda: len(failed) == 5)
    assert failed == [("raw", b"k%d" % n, b"v%d" % n) for n in range(5)]
    assert producer.pending == 0


def test_a_report_settles_a_record_once_and_a_late_one_is_ignored(producer) -> None:
    failed: list[bytes] = []
    latencies: list[float] = []
    producer.observe_latency(lambda seconds, n: latencies.append(seconds))
    report = lambda e, t, k, v: failed.append(v)  # noqa: E731
    for n in range(3):
        producer.produce("raw", b"k", b"v%d" % n, report)
    first, second, third = producer._producer.futures
    first.success(None)  # delivered
    second.failure(RuntimeError("broker gone"))  # failed: reported, spooled by the sink
    assert (producer.pending, failed, len(latencies)) == (1, [b"v1"], 1)
    wait_until(lambda: producer.pending == 0)
    assert failed == [b"v1", b"v2"]  # the silent one, given up on
    third.failure(RuntimeError("late"))  # after giving up: not reported twice
    assert failed == [b"v1", b"v2"] and producer.pending == 0


def test_a_record_the_client_refuses_is_not_left_pending(producer) -> None:
    producer._producer.fail_send = KafkaTimeoutError("buffer full")
    with pytest.raises(ProducerBusyError):
        producer.produce("raw", b"k", b"v", lambda *a: None)
    producer._producer.fail_send = ValueError("a client bug")
    with pytest.raises(ValueError):
        producer.produce("raw", b"k", b"v", lambda *a: None)
    assert producer.pending == 0


class FlakyConstruction(SilentClient):
    """A client that cannot be built while `down` (Kafka away)."""

    down = False

    def __init__(self, **config: object) -> None:
        if FlakyConstruction.down:
            raise RuntimeError("NoBrokersAvailable")
        super().__init__(**config)
        self.closed = False

    def close(self, timeout: float) -> None:
        self.closed = True


def test_a_client_that_left_records_unreported_is_replaced(monkeypatch) -> None:
    # The broker-outage test once saw kafka-python never reconnect after the broker was back.
    FlakyConstruction.down = False
    monkeypatch.setattr(kafka_sink, "KafkaProducer", FlakyConstruction)
    p = kafka_sink.KafkaPythonProducer(
        "k:9092", delivery_timeout_s=0.2, report_grace_s=0.1, renew_every_s=0
    )
    try:
        failed: list[bytes] = []
        wedged = p._producer
        FlakyConstruction.down = True  # Kafka still away: no new client yet, none lost
        p.produce("raw", b"k", b"v1", lambda e, t, k, v: failed.append(v))
        wait_until(lambda: failed == [b"v1"])
        time.sleep(0.6)  # a watchdog round at least
        assert p._producer is wedged and p.renewals == 0
        FlakyConstruction.down = False
        p.produce("raw", b"k", b"v2", lambda e, t, k, v: failed.append(v))
        wait_until(lambda: p.renewals == 1)
        assert failed == [b"v1", b"v2"]  # both spooled by their reports, in order
        assert p._producer is not wedged and wedged.closed
        p.produce("raw", b"k", b"v3", lambda e, t, k, v: failed.append(v))
        assert len(p._producer.futures) == 1  # new records go through the fresh client
        p._producer.futures[0].success(None)
        assert p.pending == 0
    finally:
        p.close(0)


def test_a_client_that_reports_everything_is_kept(producer) -> None:
    for n in range(3):
        producer.produce("raw", b"k", b"v%d" % n, lambda *a: None)
    client = producer._producer
    for future in client.futures:
        future.success(None)
    time.sleep(0.6)
    assert producer._producer is client and producer.renewals == 0
