"""The suppression list: identifiers of erased persons, which no stage may collect again.

Erasure publishes the SHA-256 of `kind:value` to a compacted topic; the collector and the
warehouse sink each follow that topic into an in-memory set. At start-up they read it to the
end before serving, so a restart never lets a suppressed identifier through.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

log = logging.getLogger(__name__)

# Event field → identifier kind, as in trackpipe.erasure.
FIELDS = {
    "device_id": "device",
    "user_id": "user",
    "email_hash": "email",
    "advertising_id": "advertising",
}


def suppression_key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


class SuppressionList:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self._bootstrap = bootstrap.split(",")
        self._topic = topic
        self._keys: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def started(self) -> bool:
        return self._thread is not None

    def add(self, keys: Iterable[str]) -> None:
        self._keys.update(keys)

    def blocks(self, event: Mapping[str, Any]) -> bool:
        keys = self._keys
        if not keys:  # the common case costs one check
            return False
        return any(
            suppression_key(kind, value) in keys
            for field, kind in FIELDS.items()
            if (value := event.get(field))
        )

    def start(self, timeout_s: float = 30.0) -> None:
        """Read the topic to its end, then keep following it in a daemon thread."""
        consumer = KafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False
        )
        try:
            self._catch_up(consumer, timeout_s)
        except BaseException:
            consumer.close()
            raise
        log.info("suppression list: %d identifiers", len(self._keys))
        self._thread = threading.Thread(
            target=self._follow, args=(consumer,), daemon=True, name="suppressions"
        )
        self._thread.start()

    def _catch_up(self, consumer: KafkaConsumer, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        # Metadata of a topic created a moment ago can lag: never follow zero partitions.
        while not (found := consumer.partitions_for_topic(self._topic)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {self._topic} not found; run `trackpipe topics`")
            time.sleep(0.2)
        partitions = [TopicPartition(self._topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not read {self._topic} to its end in {timeout_s}s")
            self._absorb(consumer.poll(timeout_ms=500))

    def start_soon(self, retry_s: float = 2.0) -> None:
        """Load and follow the list in the background, retrying while Kafka is unreachable.

        For a collector restarted during a Kafka outage: it must keep answering (its spool
        holds the events), and the warehouse sink still drops whatever slips through before
        the list is loaded, since it reads the list to its end before writing anything.
        """

        def load() -> None:
            while not self._stop.is_set():
                try:
                    self.start()
                    return
                except Exception as exc:
                    log.warning("suppression list not loaded yet (%s); retrying", exc)
                    self._stop.wait(retry_s)

        threading.Thread(target=load, daemon=True, name="suppressions-load").start()

    def _absorb(self, batches: Mapping[TopicPartition, list[Any]]) -> None:
        for records in batches.values():
            self._keys.update(r.key.decode() for r in records if r.key)

    def _follow(self, consumer: KafkaConsumer) -> None:
        try:
            while not self._stop.is_set():
                self._absorb(consumer.poll(timeout_ms=1000))
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def publish(bootstrap: str, topic: str, keys: Iterable[str]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all")
    for key in keys:
        producer.send(topic, key=key.encode(), value=b"1")
    producer.flush(30)
    producer.close()
