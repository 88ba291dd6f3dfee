"""librdkafka's reports served from the collector's event loop instead of the producer's thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from collector.sinks.confluent import ConfluentProducer


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def _failing_producer() -> ConfluentProducer:
    # No broker: every record fails at its delivery timeout, and only a poll reports it.
    return ConfluentProducer(f"127.0.0.1:{_closed_port()}", delivery_timeout_s=0.5)


def test_a_loop_serving_the_reports_runs_them_on_its_own_thread() -> None:
    producer = _failing_producer()
    failures: list[tuple[str, bytes, int]] = []

    def on_failure(exc: BaseException, topic: str, key: bytes, value: bytes) -> None:
        failures.append((topic, key, threading.get_ident()))

    async def main() -> None:
        producer.serve_on(asyncio.get_running_loop())
        try:
            producer.produce("t", b"k", b"v", on_failure)
            deadline = time.monotonic() + 10
            while not failures and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            producer.serve_on(None)

    try:
        asyncio.run(main())
        assert failures == [("t", b"k", threading.get_ident())]
        assert producer.pending == 0  # settled exactly once
    finally:
        producer.close(timeout=1)


def test_the_thread_serves_again_once_the_loop_hands_the_reports_back() -> None:
    producer = _failing_producer()
    failed = threading.Event()
    threads: list[int] = []

    def on_failure(exc: BaseException, topic: str, key: bytes, value: bytes) -> None:
        threads.append(threading.get_ident())
        failed.set()

    async def serve_a_while() -> None:
        producer.serve_on(asyncio.get_running_loop())
        await asyncio.sleep(0.2)
        producer.serve_on(None)

    try:
        asyncio.run(serve_a_while())
        producer.produce("t", b"k", b"v", on_failure)  # no loop now, nobody calls flush
        assert failed.wait(timeout=10)
        assert threads and threads[0] != threading.get_ident()  # the producer's own thread
    finally:
        producer.close(timeout=1)


def test_while_a_loop_serves_the_thread_stays_asleep() -> None:
    # The point of the change: a thread that wakes under load waits for the interpreter lock.
    producer = _failing_producer()
    reported = threading.Event()

    async def main() -> None:
        producer.serve_on(asyncio.get_running_loop())
        await asyncio.sleep(0.3)  # the thread finishes the poll it was in, then sleeps
        producer.produce("t", b"k", b"v", lambda *_: reported.set())
        started = time.monotonic()
        # Block the loop: a thread still polling would report the failure meanwhile.
        while time.monotonic() - started < 2.0:
            time.sleep(0.05)
        assert not reported.is_set()
        await asyncio.sleep(0.2)  # the loop's next tick reports it
        assert reported.is_set()
        producer.serve_on(None)

    try:
        asyncio.run(main())
    finally:
        producer.close(timeout=1)
