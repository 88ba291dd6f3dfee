"""The batcher's idle markers (streams/batcher.py), with a stand-in for aiokafka's consumer."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiokafka import TopicPartition

from streams.batcher import Batcher
from trackpipe.settings import Settings

QUIET, BUSY, BEHIND = (TopicPartition("raw", p) for p in range(3))


class Consumer:
    """What `Batcher._idle` reads: the assignment, high-water marks and positions."""

    def __init__(self) -> None:
        self.highwater_of = {QUIET: 10, BUSY: 50, BEHIND: 99}
        self.position_of = {QUIET: 10, BUSY: 50, BEHIND: 40}  # BEHIND is not at its end

    def assignment(self) -> set[TopicPartition]:
        return {QUIET, BUSY, BEHIND}

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwater_of[tp]

    async def position(self, tp: TopicPartition) -> int:
        return self.position_of[tp]


def test_a_partition_read_to_its_end_and_quiet_gets_idle_markers() -> None:
    now = [1000.0]
    batcher = Batcher(Settings(_env_file=None, identity_idle_s=60))  # type: ignore[call-arg]
    batcher.clock = lambda: now[0]
    consumer = Consumer()

    def step(polled: dict) -> list[dict]:
        return [orjson.loads(m) for m in asyncio.run(batcher._idle(consumer, polled))]

    assert step({}) == []  # just assigned: that counts as activity
    now[0] += 59
    assert step({BUSY: ["a record"]}) == []
    now[0] += 2  # 61 s after the assignment, 2 s after BUSY's last record
    before = time.time()
    [marker] = step({})
    assert marker["p"] == QUIET.partition and marker["e"] == [] and marker["last"] == -1
    assert before - 61 <= marker["idle"] / 1000 <= time.time() - 60  # now minus the idle time
    now[0] += 5
    assert step({}) == []  # at most one marker every 10 s
    now[0] += 5
    assert [m["p"] for m in step({})] == [QUIET.partition]
    now[0] += 60
    assert [m["p"] for m in step({})] == [QUIET.partition, BUSY.partition]  # BEHIND never
    consumer.highwater_of[QUIET] = 11  # a new record arrived on QUIET
    now[0] += 10
    assert [m["p"] for m in step({})] == [BUSY.partition]
