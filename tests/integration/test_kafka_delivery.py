"""The collector's producers on real Apache Kafka: acks=all, idempotent, order per key."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from collector.metrics import Metrics
from collector.server import make_producer
from collector.sinks.delivery import DIRECT, DeliverySink
from collector.spool import Spool
from trackpipe.kafka_admin import ensure_topics, read_all
from trackpipe.settings import Settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("producer", ["confluent", "kafka-python"])
def test_every_record_is_delivered_in_order_per_key(
    kafka_bootstrap: str, uid: str, producer: str, tmp_path: Path
) -> None:
    settings = Settings(
        _env_file=None,
        kafka_bootstrap=kafka_bootstrap,
        topic_raw=f"k-{uid}",
        topic_dead=f"kd-{uid}",
        collector_producer=producer,
        collector_stats_interval_s=0.2,
    )
    ensure_topics(settings)
    metrics = Metrics()
    sink = DeliverySink(make_producer(settings), Spool(tmp_path, 1 << 20), metrics)
    for i in range(2000):
        sink.send(settings.topic_raw, f"device-{i % 7}".encode(), str(i).encode())
    sink.flush(30)
    assert sink.mode == DIRECT and sink.healthy
    # kafka-python times each record; librdkafka reports its statistics every 0.2 s here.
    deadline = time.monotonic() + 10
    while metrics.produce_latency_count < 2000 and time.monotonic() < deadline:
        time.sleep(0.05)
    sink.close(timeout=30)
    records = read_all(kafka_bootstrap, settings.topic_raw)
    assert sorted(int(v) for _, v in records) == list(range(2000))
    for device in range(7):
        mine = [int(v) for k, v in records if k == f"device-{device}".encode()]
        assert mine == sorted(mine)  # one key, one partition, order kept
    assert "trackpipe_produce_latency_seconds_count 2000" in metrics.render().decode()
    assert metrics.get("spool_replayed_total") == 0
