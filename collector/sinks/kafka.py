"""Kafka delivery with kafka-python: acks=all, idempotent where the broker supports it.

The package the project was specified with and what its tooling uses; about 20 times
slower per record than confluent-kafka (see benchmarks/collector.py).
"""

from __future__ import annotations

import contextlib
import time

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from collector.sinks.base import DeliveryReport, Producer, ProducerBusyError


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

    def produce(self, topic: str, key: bytes, value: bytes, report: DeliveryReport) -> None:
        started = time.perf_counter()
        try:
            future = self._producer.send(topic, key=key, value=value)
        except KafkaTimeoutError as exc:
            raise ProducerBusyError(str(exc)) from exc
        future.add_callback(_succeeded, report, topic, key, value, started)
        future.add_errback(_failed, report, topic, key, value, started)

    def flush(self, timeout: float) -> None:
        with contextlib.suppress(KafkaTimeoutError):
            self._producer.flush(timeout=timeout)

    def close(self, timeout: float) -> None:
        self._producer.close(timeout=timeout)


def _succeeded(
    report: DeliveryReport, topic: str, key: bytes, value: bytes, started: float, _meta: object
) -> None:
    report(None, topic, key, value, time.perf_counter() - started)


def _failed(
    report: DeliveryReport,
    topic: str,
    key: bytes,
    value: bytes,
    started: float,
    exc: BaseException,
) -> None:
    report(exc, topic, key, value, time.perf_counter() - started)
