"""The faust consumer's two changes (streams/app.py), on faust's own commit logic.

A bare object carries the consumer's bookkeeping with faust's `_new_offset` bound to it: a
whole App would leave event loops and sockets behind in a unit test.
"""

from __future__ import annotations

import types
from collections import defaultdict

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.app import ForgottenPartitions, deliver_every_message

TOPIC_PARTITION = TP("attributed", 3)


def faust_consumer(*, fixed: bool) -> types.SimpleNamespace:
    c = types.SimpleNamespace(
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None),
        _read_offset=defaultdict(lambda: None),
    )
    c._new_offset = types.MethodType(Consumer._new_offset, c)
    if fixed:
        deliver_every_message(c)
    return c


def ack(c: types.SimpleNamespace, *offsets: int) -> None:
    c._acked[TOPIC_PARTITION].extend(offsets)
    c._acked_index[TOPIC_PARTITION].update(offsets)


def test_no_fetched_message_counts_as_read_already() -> None:
    # faust drops a fetched message below the partition's read offset, and takes a jump
    # above it as acknowledged; with no read offset it does neither.
    c = faust_consumer(fixed=True)
    c._read_offset[TOPIC_PARTITION] = 276
    assert c._read_offset[TOPIC_PARTITION] is None


def test_the_commit_waits_for_the_message_at_the_committed_offset() -> None:
    for fixed, first_commit in ((False, 271), (True, None)):
        c = faust_consumer(fixed=fixed)
        c._committed_offset[TOPIC_PARTITION] = 268
        ack(c, 269, 270)  # 268 itself is not acknowledged yet
        assert c._new_offset(TOPIC_PARTITION) == first_commit  # faust alone skips 268
    ack(c, 268)
    assert c._new_offset(TOPIC_PARTITION) == 271


def test_a_first_commit_takes_the_acknowledged_run() -> None:
    c = faust_consumer(fixed=True)
    ack(c, 0, 1, 2, 5)
    assert c._new_offset(TOPIC_PARTITION) == 3


def test_offsets_that_never_come_are_committed_past_after_a_while() -> None:
    # A committed offset out of the topic's retention: the consumer starts at the log's
    # start, and the messages before it never arrive.
    now = [0.0]
    c = faust_consumer(fixed=False)
    deliver_every_message(c, give_up_s=60.0, clock=lambda: now[0])
    c._committed_offset[TOPIC_PARTITION] = 100
    ack(c, 500, 501)
    assert c._new_offset(TOPIC_PARTITION) is None
    now[0] = 59.0
    assert c._new_offset(TOPIC_PARTITION) is None
    now[0] = 61.0
    assert c._new_offset(TOPIC_PARTITION) == 502


class FakeApp:
    """What `ForgottenPartitions` reads of faust's app and consumer."""

    def __init__(self, assigned: set[TP]) -> None:
        completed = types.SimpleNamespace(is_set=lambda: True)
        self.tables = types.SimpleNamespace(
            recovery=types.SimpleNamespace(completed=completed, in_recovery=False)
        )
        self.consumer = types.SimpleNamespace(
            assignment=lambda: assigned,
            _active=set(assigned),
            _buffered_partitions=set(),
            _is_changelog_tp=lambda tp: tp.topic.endswith("-changelog"),
        )
        self.consumer._get_active_partitions = lambda: self.consumer._active
        self.consumer.resume_partitions = lambda tps: self.consumer._active.update(tps)


def test_a_partition_left_paused_after_a_rebalance_is_resumed() -> None:
    paused, held_back, changelog = TP("attributed", 1), TP("attributed", 2), TP("x-changelog", 0)
    app = FakeApp({TOPIC_PARTITION, paused, held_back, changelog})
    app.consumer._active -= {paused, held_back, changelog}
    app.consumer._buffered_partitions.add(held_back)  # its buffer is full: faust's own pause
    watch = ForgottenPartitions(app, checks=3)  # type: ignore[arg-type]
    assert watch.check() == set() and watch.check() == set()
    assert watch.check() == {paused}  # the third check in a row
    assert paused in app.consumer._active and watch.resumed == 1
    assert watch.check() == set()


def test_nothing_is_resumed_while_a_recovery_runs() -> None:
    paused = TP("attributed", 1)
    app = FakeApp({paused})
    app.consumer._active.clear()
    watch = ForgottenPartitions(app, checks=2)  # type: ignore[arg-type]
    watch.check()
    app.tables.recovery.in_recovery = True
    assert watch.check() == set()  # and the count starts again
    app.tables.recovery.in_recovery = False
    assert watch.check() == set() and watch.check() == {paused}
