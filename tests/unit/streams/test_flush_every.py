"""streams/app.py `flush_every`: the stages' flush loop, on a stand-in for faust's App.

A bare object with what the loop uses (`task`, `on_before_shutdown`, `should_stop`,
`crash`): a whole App would leave event loops and sockets behind in a unit test.
"""

from __future__ import annotations

import asyncio
import types

import pytest

from streams import app as app_module
from streams.app import flush_every


class FakeApp:
    def __init__(self) -> None:
        self.should_stop = False
        self.tasks: list = []
        self.receivers: list = []
        self.crashed: list[BaseException] = []
        self.on_before_shutdown = types.SimpleNamespace(connect=self.receivers.append)

    def task(self, fun):
        self.tasks.append(fun)
        return fun

    async def crash(self, reason: BaseException) -> None:
        self.crashed.append(reason)

    async def start(self) -> None:
        for fun in self.tasks:
            await fun()

    async def shutdown(self) -> None:  # what faust sends once its consumer has stopped
        for receiver in self.receivers:
            await receiver(self)


def _run(scenario) -> None:
    asyncio.run(scenario())


async def _ticks(n: int = 5) -> None:
    await asyncio.sleep(app_module._DRAIN_S * n)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """The loop's clock, set by the test; ticks of 5 ms."""
    now = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(app_module, "_DRAIN_S", 0.005)
    monkeypatch.setattr(app_module, "time", types.SimpleNamespace(monotonic=lambda: now.now))
    return now


def _recorded(calls: list[str], failure: Exception | None = None):
    async def flush() -> None:
        calls.append("flush")
        if failure is not None:
            raise failure

    async def drain() -> None:
        calls.append("drain")

    return flush, drain


def test_flushes_by_the_interval_then_drains_while_stopping_and_ends_after(
    clock: types.SimpleNamespace,
) -> None:
    app, calls = FakeApp(), []

    async def scenario() -> None:
        flush_every(app, 10.0, *_recorded(calls))  # type: ignore[arg-type]
        await app.start()
        await _ticks()
        assert calls == []  # not due yet
        clock.now = 10.0
        await _ticks()
        assert calls == ["flush"]  # once, then due again 10 s later
        clock.now = 20.0
        await _ticks()
        assert calls == ["flush", "flush"]
        app.should_stop = True  # faust's timers would stop here; the loop drains instead
        await _ticks()
        assert calls[2:] and set(calls[2:]) == {"drain"}  # at every tick, interval or not
        await app.shutdown()  # faust's consumer has stopped
        await _ticks(2)
        drained = len(calls)
        await _ticks()
        assert len(calls) == drained  # the loop has ended

    _run(scenario)


def test_a_failing_flush_crashes_the_worker_and_the_loop_ends(
    clock: types.SimpleNamespace,
) -> None:
    app, calls = FakeApp(), []
    failure = RuntimeError("broker gone")

    async def scenario() -> None:
        flush_every(app, 10.0, *_recorded(calls, failure))  # type: ignore[arg-type]
        await app.start()
        await _ticks()  # the loop has started: due at 10
        clock.now = 10.0
        await _ticks()
        assert app.crashed == [failure]
        clock.now = 20.0
        await _ticks()
        assert calls == ["flush"]  # not retried behind the crash

    _run(scenario)
