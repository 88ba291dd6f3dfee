"""Delivery to Kafka that survives Kafka: a producer, with a durable spool behind it.

Modes, switched under one lock:
  direct    records go straight to the producer (the normal case).
  fenced    a delivery failed or the producer's queue is full. Records still in the
            producer may yet fail; their reports put them in the spool. New records wait
            in memory until the producer has settled every record (`pending` is 0), then
            join the spool behind them, so each device's order holds across the switch.
  spooling  new records are appended to the spool; a replay thread sends the spool's
            oldest records in batches, commits a batch once the producer has settled it
            with no failure (a failed batch is sent again: at least once), and switches back
            to direct only when the spool is empty — never overtaking spooled records.
A record the spool cannot take (full) is refused and counted in `events_refused_total`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from collector.metrics import Metrics
from collector.sinks.base import EventSink, Producer, ProducerBusyError
from collector.spool import Record, Spool

log = logging.getLogger(__name__)

DIRECT, FENCED, SPOOLING = "direct", "fenced", "spooling"
_MODE_CODES = {DIRECT: 0, FENCED: 1, SPOOLING: 2}


class _ReplayBatch:
    """Counts the failures of one replayed batch."""

    def __init__(self) -> None:
        self.failed = 0
        self._lock = threading.Lock()

    def fail(self, _exc: BaseException, *_record: object) -> None:
        with self._lock:
            self.failed += 1


class DeliverySink(EventSink):
    def __init__(
        self,
        producer: Producer,
        spool: Spool,
        metrics: Metrics,
        *,
        delivery_timeout_s: float = 10.0,
        replay_batch: int = 5000,
        hold_max_bytes: int = 64 << 20,
    ) -> None:
        self._producer = producer
        self._spool = spool
        self._metrics = metrics
        self._delivery_timeout_s = delivery_timeout_s
        # The longest a replayed batch takes to settle: every record is settled by the
        # delivery timeout; the margin covers the rest.
        self._batch_settle_s = delivery_timeout_s + 5
        self._replay_batch = replay_batch
        self._hold_max_bytes = hold_max_bytes
        self._lock = threading.RLock()  # kafka-python may report inside produce()
        self._mode = DIRECT if spool.empty else SPOOLING  # a restart resumes the spool
        self._failing = not spool.empty
        self._held: list[Record] = []
        self._held_bytes = 0
        self._fenced_at = 0.0
        self._on_failure = self._failed  # one bound method: producers cache by it
        self._closing = threading.Event()
        self._close_deadline = 0.0
        self._wake = threading.Event()
        self._abandon = False
        metrics.set_gauge_source(self._gauges)
        producer.observe_latency(metrics.observe_produce)
        self._replayer = threading.Thread(
            target=self._replay_loop, name="spool-replay", daemon=True
        )
        self._replayer.start()
        if self._mode == SPOOLING:
            log.warning("resuming spool %s: %d records", spool.directory, spool.depth)

    # -- the event loop's side -------------------------------------------------------------
    def send(self, topic: str, key: bytes, value: bytes) -> None:
        with self._lock:
            if self._mode == DIRECT:
                try:
                    self._producer.produce(topic, key, value, self._on_failure)
                    return
                except ProducerBusyError:
                    log.warning("producer queue full: spooling")
                    self._fence()
                except Exception:  # a client bug must not lose the record
                    log.exception("producer failed: spooling")
                    self._fence()
            record = (topic, key, value)
            if self._mode == FENCED and self._held_bytes < self._hold_max_bytes:
                self._held.append(record)
                self._held_bytes += len(key) + len(value)
            else:  # spooling, or fenced for so long that memory would run out
                self._spool_or_refuse([record])

    def serve_on(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._producer.serve_on(loop)

    @property
    def healthy(self) -> bool:
        return not self._failing and not self._spool.full

    @property
    def accepting(self) -> bool:
        return not (self._spool.full and self._mode != DIRECT)

    @property
    def mode(self) -> str:
        return self._mode

    # -- the producer's side ---------------------------------------------------------------
    def _failed(self, exc: BaseException, topic: str, key: bytes, value: bytes) -> None:
        self._metrics.inc("delivery_failed_total", topic=topic)
        with self._lock:
            if self._mode == DIRECT:
                log.error("delivery to %s failed (%s): spooling", topic, exc)
                self._fence()
            # Older than anything held: it goes first.
            self._spool_or_refuse([(topic, key, value)])

    def _fence(self) -> None:
        # The replay thread unfences once the producer has settled every record.
        self._mode = FENCED
        self._fenced_at = time.monotonic()
        self._failing = True
        self._abandon = True  # the replay thread purges the producer's queue
        self._wake.set()

    def _unfence(self) -> None:
        held, self._held, self._held_bytes = self._held, [], 0
        self._mode = SPOOLING
        self._spool_or_refuse(held)
        self._wake.set()

    def _spool_or_refuse(self, records: list[Record]) -> None:
        taken = self._spool.append(records) if records else 0
        if taken < len(records):
            for topic, _key, _value in records[taken:]:
                self._metrics.inc("events_refused_total", topic=topic)
            log.error("spool full: %d records refused", len(records) - taken)

    # -- the replay thread -----------------------------------------------------------------
    def _replay_loop(self) -> None:
        backoff = 0.5
        while True:
            # Fenced, it watches the producer settle its records; otherwise it is woken.
            self._wake.wait(timeout=0.02 if self._mode == FENCED else 0.5)
            self._wake.clear()
            self._spool.sync()
            if self._abandon:
                self._abandon = False
                self._producer.abandon_queued()
            self._unfence_when_settled()
            replayed = False
            if self._mode == SPOOLING:
                try:
                    replayed = self._replay_once()
                except Exception:  # whatever the client raises, the thread must live on
                    log.exception("spool replay failed")
                if replayed:
                    backoff = 0.5
                    self._wake.set()  # more to do, or drained: look again at once
                else:
                    self._closing.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
            if self._closing.is_set() and not (replayed and self._drain_on_close()):
                return

    def _drain_on_close(self) -> bool:
        # Shutting down while Kafka takes the spool: go on replaying it, so a graceful stop
        # leaves nothing behind, as long as one more batch fits in the shutdown's budget
        # (a batch Kafka stops taking half-way can take its whole settle time). What is left
        # stays in the spool and is replayed at the next start.
        budget = self._close_deadline - time.monotonic()
        return self._mode == SPOOLING and budget > self._batch_settle_s

    def _unfence_when_settled(self) -> None:
        if self._mode != FENCED:
            return
        # Read outside the lock: a failure report being served holds the producer's side
        # and waits for ours. Fenced, nothing new reaches the producer, so 0 stays 0.
        pending = self._producer.pending
        with self._lock:
            if self._mode != FENCED:
                return
            if pending == 0:
                self._unfence()
            # Every record is settled by the delivery timeout; a client that loses one must
            # not stall delivery for good. Its late failure would then be spooled behind
            # newer records (order, not the record, is what is lost).
            elif time.monotonic() - self._fenced_at > 2 * self._delivery_timeout_s:
                log.error("%d records never settled: spooling anyway", pending)
                self._unfence()

    def _replay_once(self) -> bool:
        records, position = self._spool.read(self._replay_batch)
        if not records and self._spool.empty:
            with self._lock:
                if self._spool.empty:  # under the lock: no send can slip in between
                    self._mode, self._failing = DIRECT, False
            return True
        batch = _ReplayBatch()
        try:
            for topic, key, value in records:
                self._produce_patiently(topic, key, value, batch)
        except ProducerBusyError:
            log.warning("spool replay: producer busy")
            return False
        self._producer.flush(self._batch_settle_s)
        unsettled = self._producer.pending
        if unsettled or batch.failed:
            log.warning(
                "spool replay failed (%d of %d, %d unsettled): retrying",
                batch.failed, len(records), unsettled,
            )  # fmt: skip
            with self._lock:
                self._failing = True
            return False
        self._spool.commit(position, len(records))
        self._metrics.inc("spool_replayed_total", len(records))
        with self._lock:
            self._failing = False
            if self._spool.empty:
                self._mode = DIRECT
                log.info("spool drained: delivering directly again")
        return True

    def _produce_patiently(self, topic: str, key: bytes, value: bytes, batch: _ReplayBatch) -> None:
        deadline = time.monotonic() + self._delivery_timeout_s
        while True:
            try:
                return self._producer.produce(topic, key, value, batch.fail)
            except ProducerBusyError:
                if time.monotonic() > deadline or self._closing.is_set():
                    raise
                time.sleep(0.01)

    # -- metrics and shutdown --------------------------------------------------------------
    def _gauges(self) -> dict[str, float]:
        return {
            "spool_records": self._spool.depth,
            "spool_bytes": self._spool.size_bytes,
            "spool_full": int(self._spool.full),
            "delivery_mode": _MODE_CODES[self._mode],
            "delivery_healthy": int(self.healthy),
        }

    def flush(self, timeout: float) -> None:
        self._producer.flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Everything in memory ends up in Kafka or in the spool, then the spool is synced.

        Every wait is bounded by `timeout`; what the producer still holds after it is
        logged and counted as refused, never dropped silently.
        """
        if self._closing.is_set():
            return
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        self._close_deadline = deadline
        self._closing.set()
        self._wake.set()
        # It replays what Kafka still takes within the budget (`_drain_on_close`) and commits
        # it; the rest, and a batch not acknowledged, stay spooled.
        self._replayer.join(left())
        if self._replayer.is_alive():
            log.warning("spool replay still waiting for Kafka at shutdown")
        if self._mode != DIRECT:  # Kafka is failing: what was never sent goes to the spool now
            self._producer.abandon_queued()
        self._producer.flush(left())
        if self._producer.pending:
            self._producer.abandon_queued()
            self._producer.flush(min(left(), 5.0))
        lost = self._producer.pending  # outside the lock, as in _unfence_when_settled
        with self._lock:
            if self._mode == FENCED or self._held:
                self._unfence()
        if lost:
            self._metrics.inc("events_refused_total", lost, topic="unknown")
            log.error("%d records neither delivered nor spooled at shutdown", lost)
        self._producer.close(min(left(), 5.0))
        self._spool.close()
        log.info(
            "delivery closed: %d records left in the spool %s",
            self._spool.depth,
            self._spool.directory,
        )
