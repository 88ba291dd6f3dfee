"""The faust consumer's two changes (streams/app.py), on faust's own commit logic.

A bare object carries the consumer's bookkeeping with faust's `_new_offset` bound to it: a
whole App would leave event loops and sockets behind in a unit test.
"""

from __future__ import annotations

import types
from collections import defaultdict

from aiokafka import TopicPartition
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.app import ForgottenPartitions, SkippedTails, deliver_every_message

TOPIC_PARTITION = TP("attributed", 3)


def faust_consumer(*, fixed: bool) -> types.SimpleNamespace:
    c = types.SimpleNamespace(
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None),
        _read_offset=defaultdict(lambda: None),
        sought=[],  # (partition, offset) of each seek, "beginning" for seek_to_beginning
        assigned=set(),
        delivered=[],  # what reached the streams
    )

    async def callback(message: types.SimpleNamespace) -> None:  # faust's conductor
        c.delivered.append(message)

    c.callback = callback
    c._new_offset = types.MethodType(Consumer._new_offset, c)

    async def seek_to_beginning(*tps: TopicPartition) -> None:  # aiokafka's, in its thread
        assert all(isinstance(tp, TopicPartition) for tp in tps)  # aiokafka's check
        c.sought.extend((TP(tp.topic, tp.partition), "beginning") for tp in tps)

    c._thread = types.SimpleNamespace(
        seek=lambda tp, offset: c.sought.append((tp, offset)), seek_to_beginning=seek_to_beginning
    )
    c.assignment = lambda: c.assigned
    c._is_changelog_tp = lambda tp: tp.topic.endswith("-changelog")

    async def perform_seek() -> None:  # faust's: committed offsets of partitions that have one
        c._committed_offset.update(committed)

    committed: dict[TP, int] = {}
    c.committed_in_kafka = committed
    c.perform_seek = perform_seek
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


def test_the_offset_of_each_message_handed_on_is_known() -> None:
    import asyncio

    c = faust_consumer(fixed=False)
    handed_on = deliver_every_message(c)
    message = types.SimpleNamespace(tp=TOPIC_PARTITION, offset=41)
    asyncio.run(c.callback(message))
    assert c.delivered == [message] and handed_on == {TOPIC_PARTITION: 41}


def test_a_first_commit_takes_the_acknowledged_run() -> None:
    c = faust_consumer(fixed=True)
    ack(c, 0, 1, 2, 5)
    assert c._new_offset(TOPIC_PARTITION) == 3


def test_messages_the_stream_skipped_are_fetched_again_once() -> None:
    # The agents acknowledge in the order they receive: 17..26 acknowledged with 16 not
    # means the stream threw 16 away. The partition is sought back to it, once.
    now = [0.0]
    c = faust_consumer(fixed=False)
    deliver_every_message(c, rewind_after_s=3.0, give_up_s=60.0, clock=lambda: now[0])
    c._committed_offset[TOPIC_PARTITION] = 16
    ack(c, *range(27, 40))
    assert c._new_offset(TOPIC_PARTITION) is None
    now[0] = 2.0
    assert c._new_offset(TOPIC_PARTITION) is None
    assert c.sought == []  # a slow agent gets its time
    now[0] = 3.5
    assert c._new_offset(TOPIC_PARTITION) is None
    assert c.sought == [(TOPIC_PARTITION, 16)]
    now[0] = 10.0
    assert c._new_offset(TOPIC_PARTITION) is None
    assert c.sought == [(TOPIC_PARTITION, 16)]  # not again for the same offset
    ack(c, *range(16, 27))  # fetched again, and acknowledged
    assert c._new_offset(TOPIC_PARTITION) == 40


def test_offsets_that_never_come_are_committed_past_after_a_while() -> None:
    # A committed offset out of the topic's retention: the consumer starts at the log's
    # start, and the messages before it never arrive, even after the seek back.
    now = [0.0]
    c = faust_consumer(fixed=False)
    deliver_every_message(c, give_up_s=60.0, clock=lambda: now[0])
    c._committed_offset[TOPIC_PARTITION] = 100
    ack(c, 500, 501)
    assert c._new_offset(TOPIC_PARTITION) is None
    now[0] = 59.0
    assert c._new_offset(TOPIC_PARTITION) is None
    assert c.sought == [(TOPIC_PARTITION, 100)]
    now[0] = 61.0
    assert c._new_offset(TOPIC_PARTITION) == 502


def test_partitions_without_a_committed_offset_are_sought_to_their_beginning() -> None:
    # faust seeks only partitions with a committed offset; what a stream threw away in the
    # others before that seek would never come again.
    import asyncio

    c = faust_consumer(fixed=True)
    committed, fresh = TP("attributed", 0), TP("attributed", 1)
    changelog = TP("app-signals-profiles-changelog", 1)
    c.assigned = {committed, fresh, changelog}
    c.committed_in_kafka[committed] = 127
    asyncio.run(c.perform_seek())
    assert c.sought == [(fresh, "beginning")]
    assert c._committed_offset[committed] == 127


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


def tails_app(assigned: set[TP]) -> FakeApp:
    app = FakeApp(assigned)
    c = app.consumer
    c._unacked_messages, c._acked, c._committed_offset, c.sought = [], {}, {}, []
    c._thread = types.SimpleNamespace(seek=lambda tp, offset: c.sought.append((tp, offset)))
    return app


def test_a_lost_tail_is_fetched_again_after_checks_in_a_row() -> None:
    import asyncio

    lost, done, busy = TP("identity-in", 0), TP("attributed", 0), TP("attributed", 1)
    app = tails_app({lost, done, busy})
    c = app.consumer
    # lost: 40..42 were handed on, no agent holds them, none waits for its commit.
    handed_on = {lost: 42, done: 17, busy: 9}
    c._committed_offset.update({lost: 40, done: 18, busy: 5})  # done: 17 is committed
    c._unacked_messages.append(types.SimpleNamespace(tp=busy))  # in an agent's hands
    tails = SkippedTails(app, handed_on, checks=3)  # type: ignore[arg-type]
    assert asyncio.run(tails.check()) == {} and asyncio.run(tails.check()) == {}
    assert asyncio.run(tails.check()) == {lost: 40}
    assert c.sought == [(lost, 40)] and tails.rewound == 1
    assert asyncio.run(tails.check()) == {}  # handed on again from 40 before it counts


def test_a_tail_waiting_for_its_commit_is_not_lost() -> None:
    import asyncio

    tp = TP("attributed", 2)
    app = tails_app({tp})
    app.consumer._committed_offset[tp] = 10
    app.consumer._acked[tp] = [10, 11]  # acknowledged: the next commit takes them
    tails = SkippedTails(app, {tp: 11}, checks=1)  # type: ignore[arg-type]
    assert asyncio.run(tails.check()) == {}
