"""Kafka delivery with kafka-python: acks=all, idempotent where the broker supports it.

The package the project was specified with and what its tooling uses; about 20 times
slower per record than confluent-kafka (see benchmarks/collector.py).

kafka-python does not always settle a record: when the broker goes away with produce
requests in flight, some futures were seen never to complete (a clean-clone run of the
broker-outage test). The `Producer` contract says every record is settled by the delivery
timeout, and the delivery sink relies on it (a record never settled is never spooled and
keeps the spool's replay from committing). So this wrapper keeps every record until its
report arrives and, once the delivery timeout and a grace period have passed without one,
fails the record itself: its failure report spools it. A report arriving after that is
ignored; if it was a success, the record is in Kafka and in the spool (delivered twice,
which at-least-once delivery allows: consumers de-duplicate by event id).

A client that lets records go unreported is wedged: in a clean-clone run of the same test
it never reconnected after the broker came back ("No node available for metadata refresh"
for the 90 s the test waited), so every replay timed out again. Whenever the watchdog has
had to fail records itself it replaces the client with a fresh one, which bootstraps again
(at most every `renew_every_s`; while Kafka is still away the new client cannot be built,
and the next round tries again). Records sent through the old client meanwhile are failed by
the watchdog like any other unreported record, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from collector.sinks.base import FailureReport, LatencyObserver, Producer, ProducerBusyError

log = logging.getLogger(__name__)

# (deadline, its failure report, topic, key, value), by record number in produce order.
_InFlight = tuple[float, FailureReport, str, bytes, bytes]


class KafkaPythonProducer(Producer):
    name = "kafka-python"

    def __init__(
        self,
        bootstrap: str,
        *,
        idempotence: bool = True,
        delivery_timeout_s: float = 10.0,
        report_grace_s: float = 2.0,
        renew_every_s: float = 5.0,
    ) -> None:
        self._options = {
            "bootstrap_servers": bootstrap.split(","),
            "acks": "all",
            "enable_idempotence": idempotence,
            "linger_ms": 20,  # the HTTP answer never waits for Kafka: fuller batches are cheaper
            "retries": 2**31 - 1 if idempotence else 5,
            "max_in_flight_requests_per_connection": 5 if idempotence else 1,
            "request_timeout_ms": max(500, int(delivery_timeout_s * 500)),
            "delivery_timeout_ms": int(delivery_timeout_s * 1000),
            # send() blocks while the buffer is full or metadata is missing: on the event
            # loop that must stay short; the caller spools instead.
            "max_block_ms": 1000,
            # The spool holds the events while Kafka is away: reconnect soon after it is back.
            "reconnect_backoff_max_ms": 1000,
        }
        self._producer = KafkaProducer(**self._options)
        self._renew_every_s = renew_every_s
        self._renewed_at = time.monotonic()
        self.renewals = 0
        self._give_up_after = delivery_timeout_s + report_grace_s
        self._lock = threading.Lock()
        self._giving_up = threading.Lock()
        self._in_flight: dict[int, _InFlight] = {}  # insertion order: oldest first
        self._reporting = 0  # failures taken out of `_in_flight` whose report is running
        self._numbers = itertools.count()
        self._observer: LatencyObserver | None = None
        self._closed = threading.Event()
        self._watchdog = threading.Thread(
            target=self._watch, name="kafka-python-watchdog", daemon=True
        )
        self._watchdog.start()

    def produce(self, topic: str, key: bytes, value: bytes, on_failure: FailureReport) -> None:
        started = time.perf_counter()
        number = next(self._numbers)
        with self._lock:
            self._in_flight[number] = (
                time.monotonic() + self._give_up_after, on_failure, topic, key, value
            )  # fmt: skip
        try:
            future = self._producer.send(topic, key=key, value=value)
        except BaseException as exc:  # not queued: the caller keeps the record
            with self._lock:
                self._in_flight.pop(number, None)
            if isinstance(exc, KafkaTimeoutError):
                raise ProducerBusyError(str(exc)) from exc
            raise
        future.add_callback(self._succeeded, number, started)
        future.add_errback(self._failed, number)

    @property
    def pending(self) -> int:
        self._give_up_overdue()
        return len(self._in_flight) + self._reporting

    def observe_latency(self, observer: LatencyObserver) -> None:
        self._observer = observer

    def _succeeded(self, number: int, started: float, _meta: object) -> None:
        with self._lock:  # produce() runs on the event loop, reports on the client's thread
            settled = self._in_flight.pop(number, None) is not None
        if settled and self._observer is not None:
            self._observer(time.perf_counter() - started, 1)

    def _failed(self, number: int, exc: BaseException) -> None:
        with self._lock:
            record = self._in_flight.pop(number, None)
            if record is None:  # given up on already: its report has spooled it
                return
            self._reporting += 1
        self._report(record, exc)

    def _report(self, record: _InFlight, exc: BaseException) -> None:
        _deadline, on_failure, topic, key, value = record
        try:
            on_failure(exc, topic, key, value)
        finally:  # settled only once its report has run: the sink orders the spool by it
            with self._lock:
                self._reporting -= 1

    def _give_up_overdue(self) -> int:
        """Fail, oldest first, every record whose report is overdue; how many there were."""
        with self._giving_up:  # one at a time: the reports reach the spool in produce order
            now = time.monotonic()
            overdue: list[_InFlight] = []
            with self._lock:
                for record in self._in_flight.values():
                    if record[0] > now:
                        break  # the same timeout for all: the rest are younger
                    overdue.append(record)
                for _ in overdue:
                    del self._in_flight[next(iter(self._in_flight))]
                self._reporting += len(overdue)
            if overdue:
                log.error("%d records without a delivery report: failing them", len(overdue))
            for record in overdue:
                self._report(record, KafkaTimeoutError("no delivery report within the timeout"))
        return len(overdue)

    def _renew(self) -> None:
        """Replace a wedged client with a fresh one (the watchdog's thread only: building a
        client can block for seconds while it bootstraps)."""
        if time.monotonic() - self._renewed_at < self._renew_every_s:
            return
        self._renewed_at = time.monotonic()
        try:
            fresh = KafkaProducer(**self._options)
        except Exception as exc:  # Kafka still away: the next round tries again
            log.warning("kafka-python client not renewed yet: %s", exc)
            return
        if self._closed.is_set():  # closed meanwhile: the fresh client would outlive us
            fresh.close(timeout=0)
            return
        old, self._producer = self._producer, fresh
        self.renewals += 1
        log.warning("kafka-python client renewed: it had left records unreported")
        with contextlib.suppress(Exception):
            old.close(timeout=0)

    def _watch(self) -> None:
        while not self._closed.wait(0.5):
            try:
                if self._give_up_overdue() and not self._closed.is_set():
                    self._renew()
            except Exception:  # a failing report must not stop the watch
                log.exception("giving up overdue records failed")

    def flush(self, timeout: float) -> None:
        with contextlib.suppress(KafkaTimeoutError):
            self._producer.flush(timeout=timeout)
        self._give_up_overdue()

    def close(self, timeout: float) -> None:
        self._closed.set()  # no renewal from here on
        self._producer.close(timeout=timeout)
