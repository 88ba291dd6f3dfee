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

Between recoveries the stages' state keeps growing and turning over (open sessions, persons,
profiles), and CPython starts a full collection whenever the objects that survived since the
last one reach a quarter of those it kept: with state churning, that is every few seconds,
each walking the whole state. That was a third of the identity stage's CPU (54–60 µs per
event with garbage collection off, 83–93 µs with it on, `benchmarks/streams.py`). So, once
recovered, every check also collects the young generations (what was allocated since the
last check) and freezes what survived, and full collections run ten times less often than
CPython's default: each then walks about a second's worth of objects, rarely. A cycle
frozen while alive and dropped later waits for the periodic full collection
(`full_every_s`: unfreeze, collect, freeze, as after a recovery), which bounds that garbage
to what becomes unreachable within one period.
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
    """Collect and freeze the heap each time the tables become recovered, and its survivors
    at every check after that (a full collection every `full_every_s`)."""

    def __init__(
        self,
        recovered: Callable[[], bool],
        full_every_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._recovered = recovered
        self._was_recovered = False
        self._full_every_s = full_every_s
        self._clock = clock
        self._full_at = -float("inf")
        self.freezes = 0
        self.survivor_freezes = 0

    def check(self) -> bool:
        """Freeze if the tables were just recovered (True), else freeze the survivors."""
        now = self._recovered()
        just_recovered = now and not self._was_recovered
        self._was_recovered = now
        if just_recovered or (now and self._clock() - self._full_at >= self._full_every_s):
            self._full(just_recovered)
        elif now:
            gc.collect(1)  # the young garbage goes first: only survivors are frozen
            gc.freeze()
            self.survivor_freezes += 1
        return just_recovered

    def _full(self, recovery: bool) -> None:
        start = time.perf_counter()
        gc.unfreeze()  # what was frozen last time is collected too
        gc.collect()
        gc.freeze()
        self._full_at = self._clock()
        self.freezes += 1
        log.info(
            "heap: %d objects frozen after %s in %.0f ms",
            gc.get_freeze_count(),
            "table recovery" if recovery else "a periodic full collection",
            (time.perf_counter() - start) * 1000,
        )


# Full collections only every this many young (generation 1) ones, against CPython's 10:
# with the survivors frozen every second there is little for them to find, and each one
# walked a second's worth of state and rows (about 55 ms, 22 times in a benchmark run).
FULL_COLLECTION_THRESHOLD = 100


def freeze_heap_after_recovery(app: faust.App, interval_s: float = 1.0) -> HeapFreezer:
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_THRESHOLD)
    freezer = HeapFreezer(lambda: tables_recovered(app))

    @app.timer(interval_s, name="heap-freeze-after-recovery")
    async def _freeze_when_recovered() -> None:
        freezer.check()

    return freezer
