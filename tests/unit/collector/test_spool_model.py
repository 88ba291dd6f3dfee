"""The spool against a plain list: appends, reads, commits, crashes and reopens in any order."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from collector.spool import Position, Record, Spool

records = st.lists(
    st.tuples(st.sampled_from(["raw", "dead"]), st.binary(max_size=8), st.binary(max_size=120)),
    max_size=6,
)


class SpoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="spool-model-"))
        self.spool = self._open()
        self.waiting: list[Record] = []  # what the spool must still hand out, in order
        self.pending: tuple[list[Record], Position] | None = None

    def _open(self) -> Spool:
        # Tiny segments and bound: rolling, deleting and refusing all happen often.
        return Spool(self.directory, 2000, segment_bytes=300, fsync_interval_s=0)

    @rule(batch=records)
    def append(self, batch: list[Record]) -> None:
        taken = self.spool.append(batch)
        self.waiting.extend(batch[:taken])
        if taken < len(batch):
            assert self.spool.full

    @rule(n=st.integers(1, 5))
    def read(self, n: int) -> None:
        got, position = self.spool.read(n)
        assert got == self.waiting[: len(got)]
        assert len(got) == min(n, len(self.waiting))
        self.pending = (got, position)

    @precondition(lambda self: self.pending is not None)
    @rule()
    def commit(self) -> None:
        assert self.pending is not None
        got, position = self.pending
        self.spool.commit(position, len(got))
        del self.waiting[: len(got)]
        self.pending = None

    @rule(torn=st.binary(min_size=1, max_size=20))
    def crash_and_reopen(self, torn: bytes) -> None:
        """The process dies (possibly mid-append, leaving garbage) and starts again."""
        self.spool.close()
        segments = sorted(self.directory.glob("*.seg"))
        if segments:
            with segments[-1].open("ab") as f:
                f.write(torn)
        self.spool = self._open()
        self.pending = None  # positions from before the restart are not reused

    @invariant()
    def depth_is_what_is_waiting(self) -> None:
        assert self.spool.depth == len(self.waiting)
        assert self.spool.empty == (not self.waiting)

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.directory, ignore_errors=True)


SpoolMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_spool_behaves_like_a_list = SpoolMachine.TestCase
