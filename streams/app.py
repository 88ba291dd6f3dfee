"""The faust App, and nothing else: agents and views register themselves on it."""

from __future__ import annotations

import faust

from trackpipe.settings import Settings


def create_app(settings: Settings) -> faust.App:
    timeout = settings.kafka_session_timeout_s
    return faust.App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(settings.worker_data_dir),
        autodiscover=False,
        web_enabled=True,
        # faust's /table/ views would serve table contents (profiles) to anyone, unkeyed.
        web_tables_enabled=False,
        web_host=settings.worker_web_host,
        web_port=settings.worker_web_port,
        broker_session_timeout=timeout,
        broker_heartbeat_interval=max(0.5, min(3.0, timeout / 3)),
        broker_commit_interval=1.0,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
