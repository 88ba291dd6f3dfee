"""The delivery sink's modes with a scripted producer: what Kafka gets, in what order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from collector.metrics import Metrics
from collector.sinks.base import FailureReport, Producer, ProducerBusyError
from collector.sinks.delivery import DIRECT, FENCED, SPOOLING, DeliverySink
from collector.spool import Spool, encode


class ScriptedProducer(Producer):
    """Up: acknowledges at once. Down: keeps records until told to fail them, or until it is
    up again (then delivers them, as a client retrying on a broker that came back)."""

    name = "scripted"

    def __init__(self) -> None:
        self._up = True
        self.busy = False
        self.purgeable = False  # like confluent-kafka's purge; kafka-python cannot
        self.losing = False  # a client bug: records produced now are never settled
        self.delivered: list[bytes] = []
        self.queued: list[tuple[str, bytes, bytes, FailureReport]] = []
        self.stuck: list[tuple[str, bytes, bytes, FailureReport]] = []
        self.lock = threading.Lock()

    @property
    def up(self) -> bool:
        return self._up

    @up.setter
    def up(self, value: bool) -> None:
        with self.lock:
            self._up = value
            if value:
                self.delivered += [record[2] for record in self.queued]
                self.queued = []

    def produce(self, topic: str, key: bytes, value: bytes, on_failure: FailureReport) -> None:
        if self.busy:
            raise ProducerBusyError("full")
        with self.lock:
            if self.losing:
                self.stuck.append((topic, key, value, on_failure))
            elif self._up:
                self.delivered.append(value)
            else:
                self.queued.append((topic, key, value, on_failure))

    @property
    def pending(self) -> int:
        with self.lock:
            return len(self.queued) + len(self.stuck)

    def fail_queued(self, count: int | None = None, *, stuck: bool = False) -> None:
        records = self.stuck if stuck else self.queued
        with self.lock:
            failing = list(records[:count] if count is not None else records)
        for record in failing:
            topic, key, value, on_failure = record
            on_failure(TimeoutError("message timed out"), topic, key, value)
            with self.lock:  # settled once its report has run, as the real clients
                records.remove(record)

    def flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.005)

    def abandon_queued(self) -> None:
        if self.purgeable:
            self.fail_queued()

    def close(self, timeout: float) -> None:
        pass


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)


@pytest.fixture
def producer() -> ScriptedProducer:
    return ScriptedProducer()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def make_sink(
    tmp_path: Path, producer: ScriptedProducer, metrics: Metrics
) -> Iterator[Callable[..., DeliverySink]]:
    sinks: list[DeliverySink] = []

    def make(max_bytes: int = 1 << 20) -> DeliverySink:
        spool = Spool(tmp_path / "spool", max_bytes)
        sink = DeliverySink(producer, spool, metrics, delivery_timeout_s=2, replay_batch=3)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close(timeout=5)  # a second close does nothing


def send(sink: DeliverySink, numbers: range) -> None:
    for i in numbers:
        sink.send("raw", b"device", str(i).encode())


def numbers(values: list[bytes]) -> list[int]:
    return [int(v) for v in values]


def test_with_kafka_up_records_go_straight_to_the_producer(
    make_sink: Callable[..., DeliverySink], producer: ScriptedProducer, tmp_path: Path
) -> None:
    sink = make_sink()
    send(sink, range(10))
    assert numbers(producer.delivered) == list(range(10))
    assert sink.mode == DIRECT and sink.healthy and sink.accepting
    assert not any(p.stat().st_size for p in (tmp_path / "spool").glob("*.seg"))


def test_records_failing_in_flight_are_spooled_ahead_of_newer_ones_and_replayed_in_order(
    make_sink: Callable[..., DeliverySink], producer: ScriptedProducer, metrics: Metrics
) -> None:
    sink = make_sink()
    send(sink, range(3))
    producer.up = False
    send(sink, range(3, 9))  # in the producer's queue when Kafka goes away
    producer.fail_queued(2)  # the first failures arrive: 5..8 are still in flight
    assert sink.mode == FENCED and not sink.healthy
    send(sink, range(9, 12))  # newer than the ones in flight: must not overtake them
    producer.fail_queued()
    wait_until(lambda: sink.mode == SPOOLING, "unfenced once the producer settled")
    send(sink, range(12, 15))
    producer.up = True
    wait_until(lambda: sink.mode == DIRECT, "spool drained")
    send(sink, range(15, 17))
    assert numbers(producer.delivered) == list(range(17))
    assert sink.healthy
    assert metrics.get("delivery_failed_total", topic="raw") == 6
    assert metrics.get("spool_replayed_total") == 12


def test_a_full_producer_queue_spools_instead_of_blocking(
    make_sink: Callable[..., DeliverySink], producer: ScriptedProducer
) -> None:
    sink = make_sink()
    producer.busy = True
    send(sink, range(5))
    wait_until(lambda: sink.mode == SPOOLING, "unfenced once the producer settled")
    producer.busy = False
    wait_until(lambda: sink.mode == DIRECT, "spool drained")
    assert numbers(producer.delivered) == list(range(5))


def test_a_failed_replay_is_retried_without_losing_anything(
    make_sink: Callable[..., DeliverySink], producer: ScriptedProducer
) -> None:
    producer.up = False
    sink = make_sink()
    send(sink, range(4))
    producer.fail_queued()
    wait_until(lambda: len(producer.queued) == 3, "first replay batch sent")
    producer.fail_queued()  # Kafka still down: the batch fails and stays in the spool
    producer.up = True
    wait_until(lambda: sink.mode == DIRECT, "spool drained")
    assert numbers(producer.delivered) == list(range(4))


def test_a_full_spool_refuses_counts_and_reports_not_ready(
    make_sink: Callable[..., DeliverySink], producer: ScriptedProducer, metrics: Metrics
) -> None:
    producer.up = False
    sink = make_sink(max_bytes=4 * len(encode(("raw", b"device", b"0"))))
    send(sink, range(6))
    producer.fail_queued()
    wait_until(lambda: sink.mode == SPOOLING, "unfenced once the producer settled")
    assert not sink.accepting and not sink.healthy
    assert metrics.get("events_refused_total", topic="raw") == 2
    rendered = metrics.render().decode()
    assert "trackpipe_spool_records 4" in rendered and "trackpipe_spool_full 1" in rendered
    producer.up = True
    wait_until(lambda: sink.mode == DIRECT, "spool drained")
    assert sink.accepting and sink.healthy
    assert numbers(producer.delivered) == list(range(4))


def test_shutdown_with_kafka_down_spools_what_is_in_flight_and_a_restart_replays_it(
    make_sink: Callable[..., DeliverySink], producer: ScriptedProducer
) -> None:
    producer.up = False
    producer.purgeable = True
    sink = make_sink()
    send(sink, range(7))
    assert len(producer.queued) == 7
    sink.close(timeout=5)
    producer.up = True
    restarted = make_sink()
    wait_until(lambda: restarted.mode == DIRECT, "spool drained after restart")
    assert numbers(producer.delivered) == list(range(7))


def restart_with_spooled(
    make_sink: Callable[..., DeliverySink], producer: ScriptedProducer, count: int
) -> DeliverySink:
    """A sink that resumes `count` records spooled while Kafka was down; Kafka is up again."""
    producer.up = False
    producer.purgeable = True
    first = make_sink()
    send(first, range(count))
    first.close(timeout=5)  # Kafka down: all of them are left in the spool
    producer.up = True
    return make_sink()  # resumes the spool, three records per replayed batch


def spooled_depth(tmp_path: Path) -> int:
    left = Spool(tmp_path / "spool", 1 << 20)
    left.close()
    return left.depth


def test_a_graceful_stop_with_kafka_up_replays_the_whole_spool_first(
    make_sink: Callable[..., DeliverySink], producer: ScriptedProducer, tmp_path: Path
) -> None:
    restarted = restart_with_spooled(make_sink, producer, 10)
    restarted.close(timeout=30)  # at once: the replay has not begun
    assert numbers(producer.delivered) == list(range(10))
    assert spooled_depth(tmp_path) == 0


def test_a_stop_whose_budget_has_no_room_for_a_batch_leaves_the_rest_spooled(
    make_sink: Callable[..., DeliverySink], producer: ScriptedProducer, tmp_path: Path
) -> None:
    restarted = restart_with_spooled(make_sink, producer, 10)
    restarted.close(timeout=5)  # under the delivery timeout plus the flush's margin
    assert len(producer.delivered) < 10
    assert spooled_depth(tmp_path) == 10 - len(producer.delivered)
    again = make_sink()
    wait_until(lambda: again.mode == DIRECT, "spool drained after the second restart")
    assert numbers(producer.delivered) == list(range(10))


def test_a_restart_with_nothing_spooled_is_ready_at_once(
    make_sink: Callable[..., DeliverySink], producer: ScriptedProducer
) -> None:
    first = make_sink()
    send(first, range(3))
    first.close(timeout=5)
    restarted = make_sink()
    assert restarted.mode == DIRECT and restarted.healthy


def test_a_producer_raising_anything_loses_nothing(
    make_sink: Callable[..., DeliverySink], producer: ScriptedProducer
) -> None:
    sink = make_sink()
    original = producer.produce
    calls = []

    def broken(*args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("client bug")
        original(*args, **kwargs)

    producer.produce = broken  # type: ignore[method-assign]
    send(sink, range(4))
    wait_until(lambda: sink.mode == DIRECT and len(producer.delivered) == 4, "replayed")
    assert numbers(producer.delivered) == list(range(4))


def test_a_record_never_settled_does_not_hold_newer_ones_in_memory(
    make_sink: Callable[..., DeliverySink], producer: ScriptedProducer, tmp_path: Path
) -> None:
    producer.losing = True
    sink = make_sink()
    send(sink, range(2))  # the client will never settle these
    producer.busy, producer.losing = True, False
    send(sink, range(2, 4))  # fenced: held until the in-flight ones are settled
    assert sink.mode == FENCED
    producer.busy = False
    # After twice the delivery timeout the held records go to the spool (durable), but
    # the spool is not committed as replayed while the client still owes reports.
    wait_until(lambda: sink.mode == SPOOLING, "unfenced after twice the delivery timeout")
    assert not sink.healthy
    producer.fail_queued(stuck=True)  # the client owes no more: late failures are spooled
    wait_until(lambda: sink.mode == DIRECT, "spool drained")
    assert numbers(producer.delivered) in ([2, 3, 0, 1], [2, 3, 2, 3, 0, 1])
