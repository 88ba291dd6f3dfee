"""The HTTP server itself, on a real socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from collector.http import HttpProtocol
from collector.routes import Routes
from tests.unit.collector.helpers import serving


@pytest.fixture
def server(routes: Routes) -> Iterator[int]:
    with serving(lambda: HttpProtocol(routes, 1024, 512)) as port:
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
