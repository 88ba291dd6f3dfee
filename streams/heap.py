"""Keep the cyclic garbage collector's full collections off the read API's latency.

A full (generation 2) collection traverses every tracked object the process holds. A worker
holds 100k+ of them that live as long as it does (modules, classes, functions, faust's
services, aiohttp, pydantic): measured on the 2-core development machine, one full
collection takes 50–80 ms, and under 1000 lookups/s the garbage of the requests (aiohttp
keeps request/response cycles) triggers one every second or two. Each one stops the event
loop, and every lookup queued meanwhile waits: that was the read API's p99 (see
docs/signals.md, "Latency with a million profiles"). The stored profiles are not the cost:
they are bytes, which the collector does not track.

Once a worker's tables are recovered, its long-lived objects are there: `gc.freeze()` moves
them to the permanent generation, which collections skip, so a full collection only
traverses what was allocated since (a few ms). Frozen objects are still freed by reference
counting; only cycles among them that die later would wait, so each completed recovery
(start-up, every rebalance) first unfreezes and collects everything once, then freezes
again: garbage in the frozen set is bounded by the heap at the last freeze.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

import faust

log = logging.getLogger(__name__)


def tables_recovered(app: faust.App) -> bool:
    recovery = app.tables.recovery
    # `completed` is set once; `in_recovery` is true again while a rebalance reloads.
    return recovery.completed.is_set() and not recovery.in_recovery


class HeapFreezer:
    """Collect and freeze the heap each time the tables become recovered."""

    def __init__(self, recovered: Callable[[], bool]) -> None:
        self._recovered = recovered
        self._was_recovered = False
        self.freezes = 0

    def check(self) -> bool:
        """Freeze if the tables were just recovered; True if it did."""
        now = self._recovered()
        just_recovered = now and not self._was_recovered
        self._was_recovered = now
        if just_recovered:
            start = time.perf_counter()
            gc.unfreeze()  # what was frozen last time is collected too
            gc.collect()
            gc.freeze()
            self.freezes += 1
            log.info(
                "heap: %d objects frozen after table recovery in %.0f ms",
                gc.get_freeze_count(),
                (time.perf_counter() - start) * 1000,
            )
        return just_recovered


def freeze_heap_after_recovery(app: faust.App, interval_s: float = 1.0) -> HeapFreezer:
    freezer = HeapFreezer(lambda: tables_recovered(app))

    @app.timer(interval_s, name="heap-freeze-after-recovery")
    async def _freeze_when_recovered() -> None:
        freezer.check()

    return freezer
