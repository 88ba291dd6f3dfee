"""The heap is frozen once per completed recovery, and unfrozen first so nothing leaks."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.heap import HeapFreezer


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


def test_a_cycle_frozen_then_dropped_is_freed_at_the_next_freeze() -> None:
    class Node:
        other: object

    a, b = Node(), Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    states = iter([True, False, True])
    freezer = HeapFreezer(lambda: next(states))
    freezer.check()  # the cycle is alive: frozen with the rest
    del a, b
    gc.collect()
    assert alive() is not None  # frozen: collections skip it
    freezer.check()
    freezer.check()  # recovered again: unfreeze, collect, freeze
    assert alive() is None
