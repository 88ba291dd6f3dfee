"""Kafka delivery with confluent-kafka (librdkafka): acks=all, idempotent where supported.

librdkafka batches and sends on its own threads; delivery reports are served by a
background thread polling the producer, so the event loop never waits for Kafka.
"""

from __future__ import annotations

import threading

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import Producer as _Producer

from collector.sinks.base import DeliveryReport, Producer, ProducerBusyError


class ConfluentProducer(Producer):
    name = "confluent"

    def __init__(
        self, bootstrap: str, *, idempotence: bool = True, delivery_timeout_s: float = 10.0
    ) -> None:
        self._producer = _Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": idempotence,
                # The HTTP answer never waits for Kafka, so a longer linger costs no beacon latency;
                # fuller batches cost less CPU here and on the broker.
                "linger.ms": 20,
                # A record not acknowledged by then gets a failure report (and is spooled).
                "message.timeout.ms": int(delivery_timeout_s * 1000),
                "queue.buffering.max.messages": 200_000,
                "queue.buffering.max.kbytes": 256 * 1024,
            }
        )
        # One adapter per report callback: a closure per record would cost on the hot path.
        self._adapters: dict[DeliveryReport, object] = {}
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)

    def _adapter(self, report: DeliveryReport) -> object:
        adapter = self._adapters.get(report)
        if adapter is None:
            if len(self._adapters) > 64:  # replay batches bring their own: keep it small
                self._adapters.clear()

            def adapter(err: KafkaError | None, msg: Message) -> None:
                if err is None:  # the record itself is only needed to spool it
                    report(None, "", b"", b"", msg.latency() or 0.0)
                else:
                    exc = KafkaException(err)
                    report(exc, msg.topic(), msg.key(), msg.value(), msg.latency() or 0.0)

            self._adapters[report] = adapter
        return adapter

    def produce(self, topic: str, key: bytes, value: bytes, report: DeliveryReport) -> None:
        try:
            self._producer.produce(topic, value, key, on_delivery=self._adapter(report))
        except BufferError as exc:
            raise ProducerBusyError("local queue full") from exc

    def flush(self, timeout: float) -> None:
        self._producer.flush(timeout)

    def abandon_queued(self) -> None:
        # Only records not yet sent: purging in-flight ones would make the idempotent
        # producer's sequence numbers disagree with the broker's.
        self._producer.purge(in_queue=True, in_flight=False, blocking=False)

    def close(self, timeout: float) -> None:
        self._producer.flush(timeout)
        self._closed.set()
        self._poller.join(timeout=1)
