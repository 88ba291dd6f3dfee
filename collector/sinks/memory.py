"""An in-memory sink for unit tests."""

from __future__ import annotations

from collections import defaultdict

from collector.sinks.base import EventSink


class MemorySink(EventSink):
    def __init__(self) -> None:
        self.records: dict[str, list[tuple[bytes, bytes]]] = defaultdict(list)
        self.is_healthy = True
        self.is_accepting = True  # tests set it False to see the 503s of a full spool

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.records[topic].append((key, value))

    def flush(self, timeout: float) -> None:
        pass

    @property
    def healthy(self) -> bool:
        return self.is_healthy

    @property
    def accepting(self) -> bool:
        return self.is_accepting
