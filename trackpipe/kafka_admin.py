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
) -> None:
    """Create the pipeline's source topics if missing (faust creates only its internal ones)."""
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
                    topic_configs=compacted.get(t, {}),
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
    """Every record of a topic, from the beginning, without a consumer group."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=int(idle_s * 1000),
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout_s
        for message in consumer:
            records.append((message.key, message.value))
            if time.monotonic() > deadline:
                break
        return records
    finally:
        consumer.close()
