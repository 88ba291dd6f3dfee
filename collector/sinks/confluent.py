"""Kafka delivery with confluent-kafka (librdkafka): acks=all, idempotent where supported.

librdkafka batches and sends on its own threads. Only failures are reported
(`delivery.report.only.error`): a report per record would make the delivery thread take the
interpreter lock once per beacon, and that hand-over cost the event loop more CPU than the
beacon's own work. Produce latency comes from librdkafka's statistics instead.

Under the collector, reports are served from the event loop (`serve_on`), not from the
producer's thread: a thread that waits for the interpreter lock is woken each time the loop
releases it, which uvloop does around every libuv callback, so under load that thread woke
about once per beacon (20k times a second) and rarely got the lock — a futex wake-up per
beacon on the loop's side, and a fifth of a core on the other.
"""

from __future__ import annotations

import asyncio
import threading

import orjson
from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import Producer as _Producer

from collector.sinks.base import FailureReport, LatencyObserver, Producer, ProducerBusyError

# librdkafka's latency windows give these percentiles: each stands for the share of the
# window's records between it and the one before (the last takes the tail).
_PERCENTILES = (("p50", 0.50), ("p75", 0.25), ("p90", 0.15), ("p95", 0.05), ("p99", 0.04))
_TAIL = ("p99_99", 0.01)
# How often an event loop serving the reports polls: failures wait at most this long.
_LOOP_POLL_S = 0.05


class ConfluentProducer(Producer):
    name = "confluent"

    def __init__(
        self,
        bootstrap: str,
        *,
        idempotence: bool = True,
        delivery_timeout_s: float = 10.0,
        stats_interval_s: float = 5.0,
    ) -> None:
        self._producer = _Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": idempotence,
                "delivery.report.only.error": True,
                # The HTTP answer never waits for Kafka, so a longer linger costs no beacon latency;
                # fuller batches cost less CPU here and on the broker.
                "linger.ms": 20,
                # A record not acknowledged by then gets a failure report (and is spooled).
                "message.timeout.ms": int(delivery_timeout_s * 1000),
                "queue.buffering.max.messages": 200_000,
                "queue.buffering.max.kbytes": 256 * 1024,
                "statistics.interval.ms": max(100, int(stats_interval_s * 1000)),
                "stats_cb": self._on_stats,
            }
        )
        # One adapter per failure callback: a closure per record would cost on the hot path.
        self._adapters: dict[FailureReport, object] = {}
        self._observer: LatencyObserver | None = None
        # Held while reports are served: `pending` never counts a failure out before its
        # report has run (the delivery sink orders the spool by it).
        self._serving = threading.Lock()
        self._closed = threading.Event()
        # Set while the producer's own thread serves the reports; cleared while a loop does.
        self._thread_serves = threading.Event()
        self._thread_serves.set()
        self._timer: asyncio.TimerHandle | None = None
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._thread_serves.wait()  # no timeout: a thread that wakes needs the lock
            with self._serving:
                self._producer.poll(0.05)

    def serve_on(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if loop is None:
            self._thread_serves.set()
            return
        self._thread_serves.clear()

        def tick() -> None:
            # Never wait on the loop: the thread may be finishing its last poll.
            if self._serving.acquire(blocking=False):
                try:
                    self._producer.poll(0)
                finally:
                    self._serving.release()
            self._timer = loop.call_later(_LOOP_POLL_S, tick)

        tick()

    def _adapter(self, on_failure: FailureReport) -> object:
        adapter = self._adapters.get(on_failure)
        if adapter is None:
            if len(self._adapters) > 64:  # replay batches bring their own: keep it small
                self._adapters.clear()

            def adapter(err: KafkaError | None, msg: Message) -> None:
                if err is not None:  # only failures are reported (see the module's note)
                    on_failure(KafkaException(err), msg.topic(), msg.key(), msg.value())

            self._adapters[on_failure] = adapter
        return adapter

    def produce(self, topic: str, key: bytes, value: bytes, on_failure: FailureReport) -> None:
        try:
            self._producer.produce(topic, value, key, on_delivery=self._adapter(on_failure))
        except BufferError as exc:
            raise ProducerBusyError("local queue full") from exc

    @property
    def pending(self) -> int:
        with self._serving:
            return len(self._producer)

    def observe_latency(self, observer: LatencyObserver) -> None:
        self._observer = observer

    def _on_stats(self, stats_json: str) -> None:
        if self._observer is not None:
            for seconds, count in latency_shares(orjson.loads(stats_json)):
                self._observer(seconds, count)

    def flush(self, timeout: float) -> None:
        self._producer.flush(timeout)

    def abandon_queued(self) -> None:
        # Only records not yet sent: purging in-flight ones would make the idempotent
        # producer's sequence numbers disagree with the broker's.
        self._producer.purge(in_queue=True, in_flight=False, blocking=False)

    def close(self, timeout: float) -> None:
        self._producer.flush(timeout)
        self._closed.set()
        self._thread_serves.set()
        self._poller.join(timeout=1)


def latency_shares(stats: dict) -> list[tuple[float, int]]:
    """(seconds, records) for one statistics window: queue time plus the broker round trip.

    librdkafka reports, per broker and window, percentiles of the time a record waited in
    the producer (`int_latency`) and of the produce request's round trip (`rtt`), in µs.
    Their sum at each percentile stands for that share of the window's records.
    """
    shares: list[tuple[float, int]] = []
    for broker in stats.get("brokers", {}).values():
        queued, rtt = broker.get("int_latency") or {}, broker.get("rtt") or {}
        records = int(queued.get("cnt", 0))
        if records <= 0:
            continue
        left = records
        for name, share in (*_PERCENTILES, _TAIL):
            count = left if name == _TAIL[0] else min(left, round(records * share))
            left -= count
            if count:
                seconds = (queued.get(name, 0) + rtt.get(name, 0)) / 1e6
                shares.append((seconds, count))
    return shares
