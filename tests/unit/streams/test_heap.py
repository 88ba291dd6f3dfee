"""The heap is frozen once per completed recovery, and unfrozen first so nothing leaks."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator

import pytest

from streams.heap import FULL_COLLECTION_THRESHOLD, HeapFreezer, freeze_heap_after_recovery


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_freezes_when_recovery_completes_and_again_after_each_rebalance() -> None:
    states = iter([False, False, True, True, True, False, True, True])
    freezer = HeapFreezer(lambda: next(states))
    done = [freezer.check() for _ in range(8)]
    assert done == [False, False, True, False, False, False, True, False]
    assert freezer.freezes == 2
    assert gc.get_freeze_count() > 0


class _Node:
    other: object


def _cycle() -> tuple[list[_Node], weakref.ref]:
    """Two objects referring to each other, kept alive by the list; a weak reference to one."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return [a, b], weakref.ref(a)


def test_a_cycle_frozen_then_dropped_is_freed_at_the_next_freeze() -> None:
    holder, alive = _cycle()
    states = iter([True, False, True])
    freezer = HeapFreezer(lambda: next(states))
    freezer.check()  # the cycle is alive: frozen with the rest
    holder.clear()
    gc.collect()
    assert alive() is not None  # frozen: collections skip it
    freezer.check()
    freezer.check()  # recovered again: unfreeze, collect, freeze
    assert alive() is None


def test_after_recovery_each_check_freezes_the_survivors_but_collects_young_garbage() -> None:
    freezer = HeapFreezer(lambda: True)
    freezer.check()  # recovered: the full collection and freeze
    gc.disable()  # no automatic collection may take the young cycle first
    try:
        kept = [object() for _ in range(100)] + [[i] for i in range(1000)]
        dead = _cycle()[1]  # garbage already, but only a collection can tell
        frozen_before = gc.get_freeze_count()
        freezer.check()
        assert dead() is None  # collected, not frozen
        assert gc.get_freeze_count() >= frozen_before + 1000  # the survivors are frozen
        assert freezer.survivor_freezes == 1 and freezer.freezes == 1
    finally:
        gc.enable()
    assert kept


def test_a_cycle_frozen_alive_and_dropped_is_freed_by_the_periodic_full_collection() -> None:
    now = [0.0]
    freezer = HeapFreezer(lambda: True, full_every_s=300.0, clock=lambda: now[0])
    holder, alive = _cycle()
    freezer.check()  # t=0: recovered, full collection: the live cycle is frozen
    holder.clear()
    now[0] = 10.0
    freezer.check()  # survivors only; the frozen cycle is not looked at
    gc.collect()
    assert alive() is not None
    now[0] = 299.0
    freezer.check()
    assert alive() is not None
    now[0] = 301.0
    freezer.check()  # a full collection is due
    assert alive() is None
    assert freezer.freezes == 2 and freezer.survivor_freezes == 2


class _App:
    """What `freeze_heap_after_recovery` uses of a faust app: its timer decorator."""

    def timer(self, interval_s: float, name: str) -> Callable[[Callable], Callable]:
        return lambda fn: fn


def test_the_worker_runs_full_collections_ten_times_less_often() -> None:
    before = gc.get_threshold()
    try:
        freeze_heap_after_recovery(_App())  # type: ignore[arg-type]
        assert gc.get_threshold() == (before[0], before[1], FULL_COLLECTION_THRESHOLD)
        assert FULL_COLLECTION_THRESHOLD >= 10 * 10  # CPython's default is 10
    finally:
        gc.set_threshold(*before)
