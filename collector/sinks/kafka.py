"""Kafka delivery with kafka-python: acks=all, idempotent where the broker supports it.

The package the project was specified with and what its tooling uses; about 20 times
slower per record than confluent-kafka (see benchmarks/collector.py).
"""

from __future__ import annotations

import contextlib
import threading
import time

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from collector.sinks.base import FailureReport, LatencyObserver, Producer, ProducerBusyError


class KafkaPythonProducer(Producer):
    name = "kafka-python"

    def __init__(
        self, bootstrap: str, *, idempotence: bool = True, delivery_timeout_s: float = 10.0
    ) -> None:
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","),
            acks="all",
            enable_idempotence=idempotence,
            linger_ms=20,  # the HTTP answer never waits for Kafka: fuller batches are cheaper
            retries=2**31 - 1 if idempotence else 5,
            max_in_flight_requests_per_connection=5 if idempotence else 1,
            request_timeout_ms=max(500, int(delivery_timeout_s * 500)),
            delivery_timeout_ms=int(delivery_timeout_s * 1000),
            # send() blocks while the buffer is full or metadata is missing: on the event
            # loop that must stay short; the caller spools instead.
            max_block_ms=1000,
        )
        self._lock = threading.Lock()
        self._pending = 0
        self._observer: LatencyObserver | None = None

    def produce(self, topic: str, key: bytes, value: bytes, on_failure: FailureReport) -> None:
        started = time.perf_counter()
        with self._lock:
            self._pending += 1
        try:
            future = self._producer.send(topic, key=key, value=value)
        except KafkaTimeoutError as exc:
            self._settled()
            raise ProducerBusyError(str(exc)) from exc
        future.add_callback(self._succeeded, started)
        future.add_errback(self._failed, on_failure, topic, key, value)

    @property
    def pending(self) -> int:
        return self._pending

    def observe_latency(self, observer: LatencyObserver) -> None:
        self._observer = observer

    def _settled(self) -> None:
        with self._lock:  # produce() runs on the event loop, reports on the client's thread
            self._pending -= 1

    def _succeeded(self, started: float, _meta: object) -> None:
        if self._observer is not None:
            self._observer(time.perf_counter() - started, 1)
        self._settled()

    def _failed(
        self, on_failure: FailureReport, topic: str, key: bytes, value: bytes, exc: BaseException
    ) -> None:
        try:
            on_failure(exc, topic, key, value)
        finally:  # settled only once its report has run: the sink orders the spool by it
            self._settled()

    def flush(self, timeout: float) -> None:
        with contextlib.suppress(KafkaTimeoutError):
            self._producer.flush(timeout=timeout)

    def close(self, timeout: float) -> None:
        self._producer.close(timeout=timeout)
