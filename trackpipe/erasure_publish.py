"""What an erasure tells the running pipeline, after the warehouse rows are deleted.

1. The identifiers' hashes go to the suppression topic (collectors, sinks and the identity
   stage stop collecting them).
2. When the identity stage runs, an erase command goes onto its input topic, in order with
   the event batches: the stitching agent forgets the persons owning those identifiers
   (graph, open sessions, its faust table) and drops later events they would block.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from kafka import KafkaProducer

from trackpipe.erasure import Identifier
from trackpipe.settings import Settings
from trackpipe.suppression import publish

# Our identifier kinds → the identity stage's types (a device is a cookie or an app).
STAGE_TYPES = {
    "device": ("cookie", "app"),
    "advertising": ("adid",),
    "user": ("user",),
    "email": ("email",),
}


def stage_keys(identifiers: Iterable[Identifier]) -> list[str]:
    return sorted({f"{t}:{i.value}" for i in identifiers for t in STAGE_TYPES[i.kind]})


def erase_command(identifiers: Iterable[Identifier]) -> bytes:
    """The identity-in message: `p` -1 tells it from a batch of raw partition `p`."""
    identifiers = list(identifiers)
    return orjson.dumps(
        {
            "p": -1,
            "erase": stage_keys(identifiers),
            "suppress": sorted({i.suppression_key for i in identifiers}),
        }
    )


def publish_erasure(settings: Settings, identifiers: list[Identifier]) -> list[str]:
    """Publish the suppression keys, then the identity stage's erase command; returns the keys."""
    from trackpipe.kafka_admin import ensure_topics

    keys = [i.suppression_key for i in identifiers]
    publish(settings.kafka_bootstrap, settings.topic_suppressions, keys)
    if settings.identity_enabled and identifiers:
        topic = settings.identity_topic("identity-in")
        ensure_topics(settings, [topic], partitions=1)
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap.split(","), acks="all")
        try:
            producer.send(topic, erase_command(identifiers), partition=0).get(timeout=30)
        finally:
            producer.close()
    return keys
