"""Taking the stitching stage over and giving it up, without Kafka: the state topic's read,
the input's seek, and a revocation arriving in the middle of either."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest

from streams import stitching
from streams.batcher import compact
from streams.engine import Engine
from streams.state_log import WAL_MAX_BYTES
from streams.stitching import Stitching
from trackpipe.identity_traffic import generate
from trackpipe.settings import Settings


class Consumer:
    """What `_take_over` uses of an aiokafka consumer."""

    def __init__(self, assigned: set[Any]) -> None:
        self.assigned = assigned
        self.sought: list[tuple[Any, int]] = []
        self.resumed: list[Any] = []

    def assignment(self) -> set[Any]:
        return self.assigned

    def seek(self, tp: Any, offset: int) -> None:
        self.sought.append((tp, offset))

    def resume(self, *tps: Any) -> None:
        self.resumed.extend(tps)


def stage() -> Stitching:
    settings = Settings(_env_file=None, topic_partitions=1)
    st = Stitching(faust.App("ownership-test", autodiscover=False), settings)

    async def follow_suppressions() -> None:  # no suppression topic here
        return None

    st.follow_suppressions = follow_suppressions  # type: ignore[method-assign]
    return st


def flushed_state(version: int) -> dict[bytes, bytes]:
    engine = Engine(1, 30 * 60_000, 10 * 60_000)
    engine.apply(0, [compact(i, orjson.dumps(e)) for i, e in enumerate(generate(10))])
    state = engine.flush(version).state
    return {k.encode(): orjson.dumps(v) for k, v in state.items() if v is not None}


def test_the_owner_starts_after_the_offset_its_state_includes(monkeypatch) -> None:
    st = stage()
    state = flushed_state(7)

    async def read_state(bootstrap: str, topic: str) -> dict[bytes, bytes]:
        assert topic == st.state_topic
        return state

    monkeypatch.setattr(stitching, "read_state", read_state)
    consumer = Consumer({st.input})
    asyncio.run(st._take_over(consumer))  # type: ignore[arg-type]
    assert st.engine is not None and st.engine.version == 7
    assert len(st.engine.graph.persons) > 0
    assert consumer.sought == [(st.input, 8)] and consumer.resumed == [st.input]
    assert st._applied == 7


def test_a_state_read_overtaken_by_a_revocation_is_dropped(monkeypatch) -> None:
    st = stage()

    async def read_state(bootstrap: str, topic: str) -> dict[bytes, bytes]:
        await st.give_up()  # the partition was revoked while the state was being read
        return flushed_state(7)

    monkeypatch.setattr(stitching, "read_state", read_state)
    consumer = Consumer({st.input})
    asyncio.run(st._take_over(consumer))  # type: ignore[arg-type]
    assert st.engine is None
    assert consumer.sought == [] and consumer.resumed == []


def test_giving_up_waits_for_a_state_write_under_way() -> None:
    st = stage()
    order: list[str] = []

    async def scenario() -> None:
        async def write() -> None:
            await asyncio.sleep(0.05)
            order.append("state written")

        st._state_write = asyncio.ensure_future(write())
        await st.give_up()
        order.append("given up")

    asyncio.run(scenario())
    assert order == ["state written", "given up"]


@pytest.mark.parametrize("revoked", [False, True])
def test_a_flush_revoked_while_writing_rows_leaves_the_state_alone(
    monkeypatch, revoked: bool
) -> None:
    st = stage()
    engine = Engine(1, 30 * 60_000, 10 * 60_000)
    engine.apply(0, [compact(i, orjson.dumps(e)) for i, e in enumerate(generate(5))])
    st.engine = engine
    states: list[dict] = []

    async def write_rows(out: Any) -> None:
        if revoked:
            await st.give_up()

    async def send(records: list, **kw: Any) -> list:
        return []

    async def write_state(encoded: dict) -> None:
        states.append(encoded)

    monkeypatch.setattr(st.writer, "write", write_rows)
    monkeypatch.setattr(st, "_send", send)
    monkeypatch.setattr(st, "_write_state", write_state)
    asyncio.run(st.flush(engine, 3))
    if revoked:
        assert states == [] and st.flushes == 0
    else:
        assert len(states) == 1 and b"meta" not in states[0] and "meta" in states[0]
        assert st.flushes == 1 and engine.version == 3


def test_a_failed_state_read_is_tried_again_on_the_next_poll(monkeypatch) -> None:
    st = stage()
    reads: list[int] = []

    async def read_state(bootstrap: str, topic: str) -> dict[bytes, bytes]:
        reads.append(1)
        if len(reads) == 1:
            raise TimeoutError("no changelog records for 30s")
        return flushed_state(4)

    async def no_wait(seconds: float) -> None:
        return None

    monkeypatch.setattr(stitching, "read_state", read_state)
    monkeypatch.setattr(stitching.asyncio, "sleep", no_wait)
    consumer = Consumer({st.input})
    asyncio.run(st._take_over(consumer))  # type: ignore[arg-type]
    assert st.engine is None and consumer.sought == []
    asyncio.run(st._take_over(consumer))  # type: ignore[arg-type]
    assert st.engine is not None and consumer.sought == [(st.input, 5)]


def test_the_workers_producer_takes_a_whole_flush_in_one_record(tmp_path) -> None:
    """A `wal` record carries a whole flush; faust's producer must allow it (setting the
    limit after the app was built left faust's 1 MB in force, with only a warning). In a
    process of its own, with warnings as errors: the app builds its own event loop."""
    code = (
        "from streams.app import create_app\n"
        "from streams.stitching import Stitching\n"
        "from trackpipe.settings import Settings\n"
        f"settings = Settings(_env_file=None, worker_data_dir={str(tmp_path)!r})\n"
        "app = create_app(settings)\n"
        "Stitching(app, settings)\n"
        "print(app.producer.max_request_size)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::faust.exceptions.AlreadyConfiguredWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) >= WAL_MAX_BYTES
