"""The sink interface the collector's service writes to, and the producer interface under it."""

from __future__ import annotations

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


# Called once per record, from the producer's thread: (error or None, topic, key, value,
# seconds between `produce` and the broker's acknowledgement). On success the record may
# be left out (empty topic, key and value): only a failed record needs to be spooled.
DeliveryReport = Callable[[BaseException | None, str, bytes, bytes, float], None]


class Producer(ABC):
    """A Kafka producer: keyed records, acks=all, idempotent where the broker supports it.

    Every produced record gets exactly one delivery report, success or failure — after
    the delivery timeout at the latest, or at once when `abandon_queued` drops it.
    """

    name: str

    @abstractmethod
    def produce(self, topic: str, key: bytes, value: bytes, report: DeliveryReport) -> None:
        """Queue a record; raises `ProducerBusyError` when it cannot be queued right now."""

    @abstractmethod
    def flush(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for every queued record's delivery report."""

    def abandon_queued(self) -> None:  # noqa: B027 - optional: not every client can purge
        """Fail records not yet sent to the broker now instead of at their timeout."""

    @abstractmethod
    def close(self, timeout: float) -> None: ...
