"""The stitching stage's state on a compacted one-partition topic: written in record batches,
read whole by the worker that takes the stage over.

The stage's state is one record per person (`p:`), per device (`d:`) and `meta`, plus a
`wal` record per flush (streams/stitching.py). It used to live in a faust Table; faust's
part was only to read it back on recovery and to hand the stage its input, and its consumer
lost input messages around rebalances (docs/streams.md, "Why not a faust agent and a faust
Table for the owner"). The records, the topic's name and its compaction are what they were.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.producer.message_accumulator import BatchBuilder

from streams.table_store import FETCH_BYTES, read_from_beginning

log = logging.getLogger(__name__)

WAL_MAX_BYTES = 32 * 1024 * 1024
# A record batch's size: under the broker's default message.max.bytes (1 MB) for topics
# that keep it, bigger for the state topic (WAL_MAX_BYTES); fewer batches, fewer round
# trips (a partition has one batch in flight). A bigger record goes alone.
BATCH_BYTES = 512 * 1024
STATE_BATCH_BYTES = 4 * 1024 * 1024

Record = tuple[str, bytes, bytes | None]  # topic, key, value (None: a tombstone)


def state_topic_configs() -> dict[str, str]:
    # Compacted: the latest record per key is the state. A `wal` record carries a whole
    # flush, so it may be far above Kafka's default 1 MB.
    return {"cleanup.policy": "compact", "max.message.bytes": str(WAL_MAX_BYTES)}


async def send_batches(
    producer: Any,
    partition_of: Callable[[str, bytes], int],
    records: list[Record],
    partition: int | None = None,
    batch_bytes: int = BATCH_BYTES,
) -> list[asyncio.Future]:
    """Send records in record batches, per partition, in order; returns the futures of their
    delivery. `producer` is a started aiokafka producer.

    One produce call per record (faust's `Topic.send`) costs a future, a serializer lookup
    and a produce request: more than the engine's work for the record. The partition is
    `partition_of(topic, key)` (the producer's own partitioner), unless given.
    """
    batches: dict[tuple[str, int], BatchBuilder] = {}
    sent = []
    for topic in {r[0] for r in records} if partition is None else ():
        await producer.partitions_for(topic)  # the partitioner reads the metadata
    for topic, key, value in records:
        p = partition_of(topic, key) if partition is None else partition
        batch = batches.get((topic, p))
        if batch is None:
            batch = batches[(topic, p)] = BatchBuilder(batch_bytes, compression_type=0)
        if batch.append(key=key, value=value, timestamp=None) is None:  # full
            sent.append(await producer.send_batch(batch, topic, partition=p))
            batch = batches[(topic, p)] = BatchBuilder(batch_bytes, compression_type=0)
            batch.append(key=key, value=value, timestamp=None)  # a first record fits
    for (topic, p), batch in batches.items():
        sent.append(await producer.send_batch(batch, topic, partition=p))
    return sent


async def read_state(bootstrap: str, topic: str) -> dict[bytes, bytes]:
    """The latest value of every key of the state topic, read from its beginning up to its
    end as it was when called (tombstones delete)."""
    started = time.perf_counter()
    tp = TopicPartition(topic, 0)
    state: dict[bytes, bytes] = {}

    def apply(_: int, records: list[Any]) -> None:
        for m in records:
            if m.value is None:
                state.pop(m.key, None)
            else:
                state[m.key] = m.value

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        enable_auto_commit=False,
        max_partition_fetch_bytes=FETCH_BYTES,
        fetch_max_bytes=FETCH_BYTES * 2,
    )
    await consumer.start()
    try:
        end = (await consumer.end_offsets([tp]))[tp]
        read = await read_from_beginning(consumer, {tp: end}, apply, math.inf)
    finally:
        await consumer.stop()
    log.info(
        "%s: %d records read up to offset %d in %.1fs, %d keys",
        topic,
        read[tp][0],
        end,
        time.perf_counter() - started,
        len(state),
    )
    return state
