"""A collector process on real Kafka, with its own topics, for the endpoint tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from trackpipe.processes import free_port, start_trackpipe, stop, wait_http


def collector_overrides(bootstrap: str, uid: str, **extra: object) -> dict[str, object]:
    overrides: dict[str, object] = {
        "kafka_bootstrap": bootstrap,
        "topic_raw": f"raw-{uid}",
        "topic_dead": f"dead-{uid}",
        "topic_bots": f"bots-{uid}",
        "topic_suppressions": f"suppressions-{uid}",
        "collector_port": free_port(),
    }
    for key, value in extra.items():
        # Complex settings travel as JSON, as pydantic-settings reads them from the environment.
        overrides[key] = orjson.dumps(value).decode() if isinstance(value, dict | list) else value
    return overrides


@contextmanager
def collector(overrides: Mapping[str, object], log_dir: Path) -> Iterator[str]:
    """Run `trackpipe collector`; yield its base URL; stop it (SIGTERM flushes Kafka)."""
    proc = start_trackpipe("collector", ["collector"], overrides, log_dir)
    url = f"http://127.0.0.1:{overrides['collector_port']}"
    try:
        wait_http(proc, f"{url}/readyz")
        yield url
    finally:
        assert stop(proc) == 0, proc.tail()


def decode_event(value: bytes) -> dict[str, Any]:
    """An event record as produced; `props` travels as a JSON string (schemas.events)."""
    record = orjson.loads(value)
    record["props"] = orjson.loads(record["props"])
    return record
