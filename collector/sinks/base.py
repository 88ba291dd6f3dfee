"""The sink interface the collector's service writes to, and the producer interface under it."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable


class SinkError(Exception):
    """Base class of sink failures."""


class ProducerBusyError(SinkError):
    """The producer cannot take a record now (local queue full, no metadata yet)."""


class EventSink(ABC):
    """Fire-and-forget record delivery with a health signal.

    `send` must not block the event loop: implementations buffer and deliver in the
    background, counting delivery failures so readiness can report them.
    """

    @abstractmethod
    def send(self, topic: str, key: bytes, value: bytes) -> None: ...

    @abstractmethod
    def flush(self, timeout: float) -> None:
        """Deliver everything in flight, waiting up to `timeout` seconds."""

    @property
    @abstractmethod
    def healthy(self) -> bool: ...

    @property
    def accepting(self) -> bool:
        """False when a record sent now would be refused (spool full, Kafka unavailable).

        JSON endpoints answer 503 then so clients retry; the pixel still answers its GIF
        and the loss is counted.
        """
        return True

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)

    def serve_on(self, loop: asyncio.AbstractEventLoop | None) -> None:  # noqa: B027 - optional
        """Do background work that needs the interpreter lock on `loop`; None: on threads again."""


# Called from the producer's thread for each record that failed: (error, topic, key, value).
# Successes are not reported one by one: a report per record made the producer's thread take
# the interpreter lock once per beacon, which cost the event loop more than the beacon's own
# work (docs/collector.md, performance). `Producer.pending` counts what is not yet settled.
FailureReport = Callable[[BaseException, str, bytes, bytes], None]
# Produce latency, observed by the producer: (seconds from `produce` to acknowledgement, how
# many records took about that long).
LatencyObserver = Callable[[float, int], None]


class Producer(ABC):
    """A Kafka producer: keyed records, acks=all, idempotent where the broker supports it.

    Every produced record is settled exactly once: acknowledged by the broker, or failed and
    handed to its `on_failure` — by the delivery timeout at the latest, or at once when
    `abandon_queued` drops it. `pending` counts the records not settled yet, including a
    failure whose report is still running.
    """

    name: str

    @abstractmethod
    def produce(self, topic: str, key: bytes, value: bytes, on_failure: FailureReport) -> None:
        """Queue a record; raises `ProducerBusyError` when it cannot be queued right now."""

    @property
    @abstractmethod
    def pending(self) -> int:
        """Records produced and not settled yet (may wait briefly for a report being served)."""

    @abstractmethod
    def flush(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for every queued record to be settled."""

    def observe_latency(self, observer: LatencyObserver) -> None:  # noqa: B027 - optional
        """Have produce latencies reported to `observer` (from the producer's thread)."""

    def serve_on(self, loop: asyncio.AbstractEventLoop | None) -> None:  # noqa: B027 - optional
        """Serve reports from `loop` (a timer on it) instead of a thread; None hands them back.

        For clients whose reports need a Python thread: under load that thread would wait for
        the interpreter lock most of the time, woken each time the loop releases it.
        """

    def abandon_queued(self) -> None:  # noqa: B027 - optional: not every client can purge
        """Fail records not yet sent to the broker now instead of at their timeout."""

    @abstractmethod
    def close(self, timeout: float) -> None: ...
