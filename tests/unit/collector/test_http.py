"""The HTTP server itself, on a real socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from collector.http import HttpProtocol, LoopWrites, Writes
from collector.routes import Routes
from tests.unit.collector.helpers import as_served, serving


@pytest.fixture(params=["at_once", "after_the_loop_iteration"])
def server(routes: Routes, request: pytest.FixtureRequest) -> Iterator[int]:
    """Every test runs with answers written at once and, as the collector does, together
    once the loop has handled what it read (one writer shared by the connections)."""

    def served(writes: Writes) -> HttpProtocol:
        return HttpProtocol(routes, 1024, 512, writes=writes)

    at_once = request.param == "at_once"
    with serving((lambda: served(Writes())) if at_once else as_served(served)) as port:
        yield port


def exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_keep_alive_serves_several_requests_on_one_connection(server: int) -> None:
    request = b"GET /i?s=shop HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reply = exchange(server, request * 2 + last)
    assert reply.count(b"HTTP/1.1 200 OK") == 3
    assert reply.count(b"Content-Type: image/gif") == 2


def test_body_over_the_hard_limit_is_refused_before_reading(server: int) -> None:
    reply = exchange(server, b"POST /i HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\nx")
    assert reply.startswith(b"HTTP/1.1 413")


def test_overlong_url_is_refused(server: int) -> None:
    reply = exchange(server, b"GET /i?s=" + b"a" * 600 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 414")


def test_garbage_gets_a_400(server: int) -> None:
    assert exchange(server, b"\x00\x01 nonsense\r\n\r\n").startswith(b"HTTP/1.1 400")


def test_answers_keep_their_order_up_to_a_malformed_request(server: int) -> None:
    good = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    reply = exchange(server, good * 2 + b"\x00\x01 nonsense\r\n\r\n" + good)
    assert reply.count(b"HTTP/1.1 200 OK") == 2  # the two before it, then the 400, closed
    assert reply.index(b"HTTP/1.1 400") > reply.rindex(b"HTTP/1.1 200 OK")
    assert reply.count(b"HTTP/1.1 ") == 3


def test_a_client_gone_before_its_answer_costs_no_other_connection_its_own(server: int) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server), timeout=5) as gone:
            gone.sendall(request)
            gone.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        # closed with a reset, maybe before its answer was written; the next is served
        last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        assert exchange(server, last).startswith(b"HTTP/1.1 200 OK")


class _Transport:
    def __init__(self, closing: bool = False, broken: bool = False) -> None:
        self.written: list[bytes] = []
        self.closed = closing
        self.broken = broken

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes) -> None:
        if self.broken:
            raise RuntimeError("handle closed")
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


def test_loop_writes_wait_for_the_iteration_skip_the_gone_and_survive_the_broken() -> None:
    async def scenario() -> tuple[list[list[bytes]], list[list[bytes]]]:
        writes = LoopWrites(asyncio.get_running_loop())
        ok, gone, broken, last = (
            _Transport(),
            _Transport(closing=True),
            _Transport(broken=True),
            _Transport(),
        )
        for transport, data, close in (
            (ok, b"1", False), (gone, b"2", False), (broken, b"3", False), (ok, b"4", False),
            (last, b"5", True),
        ):  # fmt: skip
            writes.add(transport, data, close)  # type: ignore[arg-type]
        before = [t.written.copy() for t in (ok, gone, broken, last)]
        await asyncio.sleep(0)  # the loop runs what was scheduled in this iteration
        return before, [t.written for t in (ok, gone, broken, last)]

    before, after = asyncio.run(scenario())
    assert before == [[], [], [], []]  # nothing written from inside the callbacks
    assert after == [[b"1", b"4"], [], [], [b"5"]]  # in order; the gone and broken skipped
