from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector import spool as spool_module
from collector.spool import encode


@pytest.fixture(autouse=True)
def closes_spools(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    opened: list[spool_module.Spool] = []

    class Tracked(spool_module.Spool):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(spool_module, "Spool", Tracked)
    yield
    for spool in opened:
        if not spool._file.closed:
            spool.close()


def Spool(*args, **kwargs) -> spool_module.Spool:  # noqa: N802 - stands in for the class
    return spool_module.Spool(*args, **kwargs)


def records(n: int, start: int = 0) -> list[tuple[str, bytes, bytes]]:
    return [
        ("raw", f"dev-{i % 3}".encode(), f"value-{i}".encode()) for i in range(start, start + n)
    ]


def drain(spool: Spool, batch: int = 7) -> list[tuple[str, bytes, bytes]]:
    out = []
    while True:
        got, position = spool.read(batch)
        spool.commit(position, len(got))
        if not got:
            return out
        out.extend(got)


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, segment_bytes=256)
    assert spool.append(records(50)) == 50
    assert spool.depth == 50 and len(list(tmp_path.glob("*.seg"))) > 3
    assert drain(spool) == records(50)
    assert spool.empty and spool.depth == 0
    # Drained segments are deleted at once; only the fresh one being written remains.
    assert [p.stat().st_size for p in tmp_path.glob("*.seg")] == [0]


def test_a_restart_resumes_after_the_last_commit(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, segment_bytes=300)
    spool.append(records(40))
    got, position = spool.read(15)
    spool.commit(position, len(got))
    spool.close()
    reopened = Spool(tmp_path, 1 << 20, segment_bytes=300)
    assert reopened.depth == 25
    reopened.append(records(5, start=40))
    assert drain(reopened) == records(30, start=15)


def test_a_torn_tail_is_cut_off_and_the_rest_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.append(records(10))
    spool.close()
    [segment] = [p for p in tmp_path.glob("*.seg") if p.stat().st_size]
    whole = segment.read_bytes()
    segment.write_bytes(whole + encode(("raw", b"k", b"half-written"))[:-4])
    reopened = Spool(tmp_path, 1 << 20)
    assert reopened.depth == 10
    assert drain(reopened) == records(10)


def test_a_corrupt_record_ends_its_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.append(records(3))
    spool.close()
    [segment] = [p for p in tmp_path.glob("*.seg") if p.stat().st_size]
    data = bytearray(segment.read_bytes())
    data[-2] ^= 0xFF  # flip a bit in the last record's value: its CRC no longer matches
    segment.write_bytes(bytes(data))
    assert drain(Spool(tmp_path, 1 << 20)) == records(2)


def test_the_bound_refuses_what_does_not_fit_and_frees_space_once_delivered(
    tmp_path: Path,
) -> None:
    size = len(encode(records(1)[0]))
    spool = Spool(tmp_path, size * 10)
    assert spool.append(records(12)) == 10
    assert spool.full and spool.depth == 10
    assert drain(spool) == records(10)
    assert not spool.full
    assert spool.append(records(10)) == 10


def test_fsync_after_every_append_when_the_interval_is_zero(tmp_path: Path, monkeypatch) -> None:
    import collector.spool as module

    synced: list[int] = []
    monkeypatch.setattr(module.os, "fsync", lambda fd: synced.append(fd))
    spool = Spool(tmp_path, 1 << 20, fsync_interval_s=0)
    spool.append(records(1))
    spool.append(records(1))
    assert len(synced) == 2
    lazy = Spool(tmp_path / "lazy", 1 << 20, fsync_interval_s=3600)
    lazy.append(records(1))
    lazy.sync()
    assert len(synced) == 2  # not due yet
    lazy.sync(force=True)
    assert len(synced) == 3


def test_a_record_bigger_than_a_read_chunk_is_read_whole(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(spool_module, "_READ_CHUNK", 64)
    spool = Spool(tmp_path, 1 << 20)
    big = [("raw", b"k", b"v" * 500), ("raw", b"k", b"w" * 10)]
    spool.append(big)
    assert drain(spool, batch=1) == big
