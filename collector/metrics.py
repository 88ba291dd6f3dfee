"""Prometheus counters and a produce-latency histogram, in the text exposition format."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from itertools import accumulate

CounterKey = tuple[str, tuple[tuple[str, str], ...]]
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self._counts: Counter[CounterKey] = Counter()
        self._buckets = [0] * len(_BUCKETS)
        self._latency_sum = 0.0
        self._latency_count = 0
        self._lock = threading.Lock()  # producer callbacks run on its I/O thread
        self._gauge_sources: list[Callable[[], dict[str, float]]] = []

    def set_gauge_source(self, source: Callable[[], dict[str, float]]) -> None:
        """`source()` gives gauges by name, read at each scrape (spool depth, mode)."""
        self._gauge_sources.append(source)

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        # Sorting is only needed to make several labels' order canonical (hot path).
        key = tuple(labels.items()) if len(labels) < 2 else tuple(sorted(labels.items()))
        with self._lock:
            self._counts[(name, key)] += amount

    @staticmethod
    def key(name: str, **labels: str) -> CounterKey:
        """A counter's key, built once for `add` where a counter is hit per beacon."""
        return (name, tuple(sorted(labels.items())))

    def add(self, key: CounterKey, amount: int = 1) -> None:
        """`inc` by a key from `key`: no labels to order for each beacon."""
        with self._lock:
            self._counts[key] += amount

    def get(self, name: str, **labels: str) -> int:
        return self._counts[(name, tuple(sorted(labels.items())))]

    def observe_produce(self, seconds: float, count: int = 1) -> None:
        # `count` records took about `seconds` (a producer may report a window's shares):
        # count one bucket here, accumulate them at render time.
        slot = bisect_left(_BUCKETS, seconds)
        with self._lock:
            self._latency_sum += seconds * count
            self._latency_count += count
            if slot < len(_BUCKETS):
                self._buckets[slot] += count

    @property
    def produce_latency_count(self) -> int:
        return self._latency_count

    def render(self) -> bytes:
        lines: list[str] = []
        with self._lock:
            for (name, labels), value in sorted(self._counts.items()):
                label = ",".join(f'{k}="{v}"' for k, v in labels)
                lines.append(
                    f"trackpipe_{name}{{{label}}} {value}" if label else f"trackpipe_{name} {value}"
                )
            for source in self._gauge_sources:
                lines.extend(f"trackpipe_{k} {v}" for k, v in sorted(source().items()))
            name = "trackpipe_produce_latency_seconds"
            for bound, count in zip(_BUCKETS, accumulate(self._buckets), strict=True):
                lines.append(f'{name}_bucket{{le="{bound}"}} {count}')
            lines.append(f'{name}_bucket{{le="+Inf"}} {self._latency_count}')
            lines.append(f"{name}_sum {self._latency_sum:.6f}")
            lines.append(f"{name}_count {self._latency_count}")
        return ("\n".join(lines) + "\n").encode()
