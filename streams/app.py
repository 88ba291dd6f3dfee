"""The faust App, and nothing else: agents and views register themselves on it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any

import faust
from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError

from streams import table_store
from streams.heap import tables_recovered
from streams.state_log import WAL_MAX_BYTES
from trackpipe.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> faust.App:
    timeout = settings.kafka_session_timeout_s
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        store=f"{table_store.SCHEME}://",  # faust's memory store, recovered in bulk
        datadir=str(settings.worker_data_dir),
        autodiscover=False,
        web_enabled=True,
        # faust's /table/ views would serve table contents (profiles) to anyone, unkeyed.
        web_tables_enabled=False,
        web_host=settings.worker_web_host,
        web_port=settings.worker_web_port,
        broker_session_timeout=timeout,
        broker_heartbeat_interval=max(0.5, min(3.0, timeout / 3)),
        broker_commit_interval=1.0,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # faust's 1 MiB per partition is a couple of dozen batch messages (the stitching
        # stage's, when it read through faust; the attributed topic's still): on a backlog the
        # agent applied them in under a second, then waited for the next fetch; it spent most
        # of the benchmark's run waiting (docs/streams.md).
        consumer_max_fetch_size=settings.worker_fetch_bytes,
        # The identity stage's `wal` record carries a whole flush (streams/state_log.py). Set
        # here: faust's producer reads it when the app is built, so setting it later (as a
        # stage's constructor once did) only logged a warning and left 1 MB in force.
        producer_max_request_size=WAL_MAX_BYTES,
    )
    table_store.recover_in_bulk(app)
    handed_on = deliver_every_message(app.consumer)
    ForgottenPartitions(app).register()
    SkippedTails(app, handed_on).register()
    return app


def flush_every(
    app: faust.App,
    seconds: float,
    flush: Callable[[], Awaitable[None]],
    drain: Callable[[], Awaitable[None]],
) -> None:
    """Run `flush` every `seconds` from start-up; once the worker is stopping, `drain`
    (flush whatever is held, now) every `_DRAIN_S`, until its consumer has stopped.

    The stages acknowledge their input only once a flush has written it. faust's own timers
    stop as soon as the worker starts stopping, and then faust waits for every delivered
    message to be acknowledged (`stream_wait_empty`), with nobody left to flush: the worker
    hung until it was killed whenever a stage held input at that moment (an idle marker, a
    batch of the signals stage). This loop keeps flushing through that wait and ends after
    it. A failing flush crashes the worker, as it did from a faust timer.
    """
    task: asyncio.Task | None = None

    async def loop() -> None:
        due = time.monotonic() + seconds
        while True:
            await asyncio.sleep(_DRAIN_S)
            try:
                if app.should_stop:
                    await drain()
                elif time.monotonic() >= due:
                    due = time.monotonic() + seconds
                    await flush()
            except Exception as exc:
                await app.crash(exc)
                return

    @app.task
    async def start() -> None:
        nonlocal task
        task = asyncio.ensure_future(loop())

    async def stop(sender: Any, **kwargs: Any) -> None:  # sent once the consumer has stopped
        if task is not None:
            task.cancel()

    app.on_before_shutdown.connect(stop)


_DRAIN_S = 0.1


class _NoReadOffsets(dict):
    """faust's per-partition "read offset", as seen by its fetch loop: never known."""

    def __getitem__(self, key: Hashable) -> None:
        return None


def _seek(consumer: Any, tp: Any, offset: int) -> None:
    try:
        consumer._thread.seek(tp, offset)  # what faust's own `Consumer._seek` calls
    except IllegalStateError as exc:  # revoked meanwhile: the next owner seeks
        log.warning("seeking %s back to %d: %s", tp, offset, exc)


async def _seek_to_beginning(consumer: Any, tps: Iterable[Any]) -> None:
    tps = sorted(tps)
    try:  # aiokafka's own call (faust's consumer has none), with aiokafka's partitions
        await consumer._thread.seek_to_beginning(
            *(TopicPartition(tp.topic, tp.partition) for tp in tps)
        )
    except IllegalStateError as exc:  # no longer assigned: the next assignment seeks
        log.warning("seeking %s to their beginning: %s", [str(tp) for tp in tps], exc)


def _in_a_row(seen: dict[Any, int], found: Iterable[Any], checks: int) -> set[Any]:
    """Count the checks in a row each partition was found on (`seen`, updated in place);
    the ones found on `checks` checks in a row are returned and counted afresh."""
    counts = {tp: seen.get(tp, 0) + 1 for tp in found}
    due = {tp for tp, n in counts.items() if n >= checks}
    seen.clear()
    seen.update((tp, n) for tp, n in counts.items() if tp not in due)
    return due


def deliver_every_message(
    consumer: Any,
    rewind_after_s: float = 3.0,
    give_up_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> dict[Any, int]:
    """Make faust's consumer hand every fetched message to the agents, fetch again what its
    streams threw away, and commit only what the agents acknowledged.

    Three ways faust 0.15 loses messages when a worker takes partitions over (found by
    killing a worker mid-stream; docs/signals.md):
    - It drops a fetched message whose offset is below the last one it handed on ("read
      offset"), and treats a jump in offsets as acknowledged ("gap"). The stream partitions
      are resumed *before* they are sought to the committed offsets; the seek moves the read
      offset back, the messages still in the fetch buffer jump ahead of it (marked
      acknowledged), and the same messages fetched again are dropped as read already.
      Without a read offset nothing is dropped and nothing is assumed acknowledged.
    - A stream throws away a message it takes while flow control is suspended, or that was
      fetched in an earlier generation. faust counts on the seek to the committed offsets
      to fetch those again, but a partition with no committed offset yet (a topic the dead
      worker had not committed) is not sought, so they were gone for good: a whole
      record batch of the attributed topic in one run. After faust's seek, such partitions
      are sought to their beginning, where a consumer without a committed offset starts.
    - The same throwing away can follow the seek. Our agents acknowledge in the order they
      receive, so a later message acknowledged while the one at the committed offset is not
      means the latter never reached them: after `rewind_after_s` the partition is sought
      back to the committed offset, once for that offset.
    Messages fetched twice reach the agents twice, which the stages apply once (the signals
    stage recognises event ids and merges). The stitching stage no longer reads through
    this consumer: its state says where its input resumes (streams/stitching.py).

    faust's commit also moves past the committed offset's own message when the next one is
    acknowledged first (`min(acked) - committed > 1`); the wrapper below waits for it. The
    one case where that message never comes is a committed offset that fell out of the
    topic's retention (the consumer resets to the log's start): after `give_up_s` of
    waiting with later messages acknowledged, the offsets before them are taken as gone,
    logged, and committed past, as faust's gap bookkeeping would have done at once.

    Returns partition → the offset of the last message handed on to the streams.
    """
    consumer._read_offset = _NoReadOffsets()
    handed_on: dict[Any, int] = {}
    on_message = consumer.callback

    async def callback(message: Any) -> Any:
        handed_on[message.tp] = message.offset
        return await on_message(message)

    consumer.callback = callback
    new_offset, perform_seek = consumer._new_offset, consumer.perform_seek
    # partition → (committed, since when, rewound yet)
    waiting: dict[Any, tuple[int, float, bool]] = {}

    def _new_offset(tp: Any) -> int | None:
        acked, committed = consumer._acked.get(tp), consumer._committed_offset.get(tp)
        if acked and committed is not None and min(acked) > committed:
            seen = waiting.get(tp)
            if seen is None or seen[0] != committed:
                waiting[tp] = (committed, clock(), False)
                return None  # the message at the committed offset is not acknowledged yet
            waited = clock() - seen[1]
            if waited < rewind_after_s:
                return None
            if not seen[2]:
                log.warning(
                    "%s: offsets %d..%d skipped by the stream: fetching them again",
                    tp, committed, min(acked) - 1,
                )  # fmt: skip
                waiting[tp] = (committed, seen[1], True)
                _seek(consumer, tp, committed)
                return None
            if waited < give_up_s:
                return None
            log.warning(
                "%s: offsets %d..%d never arrived in %.0fs (out of retention?): committed past",
                tp, committed, min(acked) - 1, give_up_s,
            )  # fmt: skip
            consumer._committed_offset[tp] = min(acked) - 1  # what faust's own check allows
        waiting.pop(tp, None)
        return new_offset(tp)

    async def _perform_seek() -> None:
        await perform_seek()
        uncommitted = {
            tp
            for tp in consumer.assignment()
            if consumer._committed_offset.get(tp) is None and not consumer._is_changelog_tp(tp)
        }
        if uncommitted:
            await _seek_to_beginning(consumer, uncommitted)

    consumer._new_offset, consumer.perform_seek = _new_offset, _perform_seek
    return handed_on


class ForgottenPartitions:
    """Resumes stream partitions that faust left paused after a rebalance.

    With several workers joining at once, a worker logged "Recovery complete" for an
    assignment and then found `consumer.assignment()` empty: faust resumes the stream
    partitions it reads from there, so the ones it had paused when the rebalance began
    stayed paused. The worker fetched nothing from them for the whole generation (a CI run:
    a signals worker with four partitions that took no message in 90 s). A partition
    assigned to this worker, neither a changelog nor held back because its buffer is full,
    and not fetched on three checks in a row while no recovery is running, is resumed.
    """

    def __init__(self, app: faust.App, checks: int = 3) -> None:
        self.app, self.checks = app, checks
        self._seen: dict[Any, int] = {}
        self.resumed = 0

    def stuck(self) -> set[Any]:
        consumer = self.app.consumer
        if not tables_recovered(self.app):
            return set()
        active = consumer._get_active_partitions()
        return {
            tp
            for tp in consumer.assignment()
            if tp not in active
            and tp not in consumer._buffered_partitions
            and not consumer._is_changelog_tp(tp)
        }

    def check(self) -> set[Any]:
        """One check: the partitions resumed now (stuck on `checks` checks in a row)."""
        due = _in_a_row(self._seen, self.stuck(), self.checks)
        if due:
            log.warning("resuming partitions faust left paused: %s", sorted(map(str, due)))
            self.app.consumer.resume_partitions(due)
            self.resumed += len(due)
        return due

    def register(self, interval_s: float = 2.0) -> ForgottenPartitions:
        async def resume_forgotten_partitions() -> None:
            self.check()

        self.app.timer(interval_s)(resume_forgotten_partitions)
        return self


class SkippedTails:
    """Fetches again the last messages of a partition when a stream threw them away.

    `deliver_every_message` sees a thrown-away message once a later one of its partition is
    acknowledged. When nothing follows it (the last messages of a partition before a
    rebalance), its partition would wait for good: a message at or after the
    committed offset was handed on to the streams, yet none of the partition's messages is
    in an agent's hands or waiting for its commit. After `checks` checks like that in a row,
    the partition is sought back to its committed offset (to its beginning without one).
    A message only waiting in a stream's buffer that long (an agent stuck for as long) is
    fetched twice, which the stages apply once.
    """

    def __init__(self, app: faust.App, handed_on: dict[Any, int], checks: int = 5) -> None:
        self.app, self.handed_on, self.checks = app, handed_on, checks
        self._seen: dict[Any, int] = {}
        self.rewound = 0

    def lost(self) -> dict[Any, int | None]:
        """Partition → committed offset, for each partition whose handed-on tail is lost."""
        consumer = self.app.consumer
        if not tables_recovered(self.app):
            return {}
        in_hand = {m.tp for m in list(consumer._unacked_messages)}
        found: dict[Any, int | None] = {}
        for tp in consumer.assignment():
            last = self.handed_on.get(tp)
            if last is None or tp in in_hand or consumer._acked.get(tp):
                continue
            committed = consumer._committed_offset.get(tp)
            if (committed is None or last >= committed) and not consumer._is_changelog_tp(tp):
                found[tp] = committed
        return found

    async def check(self) -> dict[Any, int | None]:
        """One check: the partitions sought back now (lost on `checks` checks in a row)."""
        lost = self.lost()
        due = {tp: lost[tp] for tp in _in_a_row(self._seen, lost, self.checks)}
        for tp, committed in due.items():
            log.warning("%s: messages from %s on skipped by the stream: fetching them again",
                        tp, "the beginning" if committed is None else committed)  # fmt: skip
            self.handed_on.pop(tp, None)
            if committed is None:
                await _seek_to_beginning(self.app.consumer, [tp])
            else:
                _seek(self.app.consumer, tp, committed)
        self.rewound += len(due)
        return due

    def register(self, interval_s: float = 2.0) -> SkippedTails:
        async def fetch_skipped_tails_again() -> None:
            await self.check()

        self.app.timer(interval_s)(fetch_skipped_tails_again)
        return self
