"""Topic administration and counting with kafka-python (the tooling client)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from trackpipe.settings import Settings

log = logging.getLogger(__name__)


def ensure_topics(
    settings: Settings,
    names: Iterable[str] | None = None,
    timeout_s: float = 30.0,
    partitions: int | None = None,
    configs: dict[str, str] | None = None,
) -> None:
    """Create the pipeline's source topics if missing (faust creates only its internal ones);
    `configs` are topic configs for every topic created."""
    wanted = list(
        names
        or (
            settings.topic_raw,
            settings.topic_dead,
            settings.topic_bots,
            settings.topic_suppressions,
        )
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=settings.kafka_bootstrap.split(","), request_timeout_ms=10_000
            )
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Kafka at {settings.kafka_bootstrap} unreachable: {exc}"
                ) from exc
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            # The suppression list must outlive any retention: compacted, one record per key.
            compacted = {settings.topic_suppressions: {"cleanup.policy": "compact"}}
            topics = [
                NewTopic(
                    t,
                    partitions or settings.topic_partitions,
                    settings.topic_replication,
                    topic_configs=compacted.get(t, {}) | (configs or {}),
                )
                for t in missing
            ]
            # Another process may win the race to create them: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(topics)
            log.info("created topics %s", missing)
    finally:
        admin.close()


def read_all(
    bootstrap: str, topic: str, idle_s: float = 2.0, timeout_s: float = 30.0
) -> list[tuple[bytes | None, bytes]]:
    """Every record of a topic, from the beginning up to its end when called, without a
    consumer group.

    Reading stops at the partitions' end offsets, not after a pause: a broker that has just
    restarted can pause a fetch for seconds, and stopping at a pause returned records short
    (what looked like lost beacons in a broker-outage test). A topic that does not exist
    yet reads as empty after `idle_s`; not reaching the end within `timeout_s` raises.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","), enable_auto_commit=False, group_id=None
    )
    try:
        partitions = _partitions(consumer, topic, idle_s)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                short = {tp.partition: (consumer.position(tp), end) for tp, end in ends.items()}
                raise TimeoutError(f"{topic}: not read to the end in {timeout_s}s: {short}")
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend((m.key, m.value) for m in batch)
        return records
    finally:
        consumer.close()


def _partitions(consumer: KafkaConsumer, topic: str, wait_s: float) -> set[int]:
    """The topic's partitions; empty when it does not exist after `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        found = consumer.partitions_for_topic(topic)
        if found or time.monotonic() > deadline:
            return found or set()
        time.sleep(0.1)
