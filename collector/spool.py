"""A bounded, durable, append-only spool for records Kafka could not take yet.

Layout of a spool directory:
  <segment>.seg   records, oldest segment first (the name is a sequence number)
  committed       "<segment> <offset>": everything before it reached Kafka

A record is framed as `>II` (body length, CRC-32 of the body) + body, the body being
`>HH` (topic length, key length) + topic + key + value. A torn or corrupt tail — the
process died in the middle of an append — ends the segment: it is cut off when the spool
is opened, and writing always continues in a fresh segment.

Durability: every append is written to the operating system at once (it survives a crash
of the collector); `fsync` runs every `fsync_interval_s` seconds, or after every append
when that is 0 (it then also survives a power loss). Positions are committed after Kafka
acknowledged the records; a lost checkpoint only means records are replayed twice.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

Record = tuple[str, bytes, bytes]  # topic, key, value

_FRAME = struct.Struct(">II")
_BODY = struct.Struct(">HH")
_READ_CHUNK = 4 << 20


class Position(NamedTuple):
    segment: int
    offset: int


def encode(record: Record) -> bytes:
    topic, key, value = record
    t = topic.encode()
    body = _BODY.pack(len(t), len(key)) + t + key + value
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def decode_all(data: bytes, max_records: int = -1) -> tuple[list[Record], int]:
    """The whole records at the start of `data` (at most `max_records`), and their size."""
    records: list[Record] = []
    pos, end = 0, len(data)
    while pos + _FRAME.size <= end and len(records) != max_records:
        length, crc = _FRAME.unpack_from(data, pos)
        start, stop = pos + _FRAME.size, pos + _FRAME.size + length
        if stop > end or length < _BODY.size:
            break
        body = data[start:stop]
        if zlib.crc32(body) != crc:
            break
        t_len, k_len = _BODY.unpack_from(body)
        k_start = _BODY.size + t_len
        topic = body[_BODY.size : k_start].decode()
        records.append((topic, body[k_start : k_start + k_len], body[k_start + k_len :]))
        pos = stop
    return records, pos


class Spool:
    """Thread-safe: the event loop and the producer's thread append, the replayer reads."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        *,
        segment_bytes: int = 16 << 20,
        fsync_interval_s: float = 1.0,
    ) -> None:
        self.directory = directory
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._fsync_interval_s = fsync_interval_s
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self._committed, self._segments, self._records = self._recover()
        self._bytes = sum(self._path(s).stat().st_size for s in self._segments)
        self._refused = False
        self._last_sync = time.monotonic()
        self._dirty = False
        self._open_segment((self._segments[-1] + 1) if self._segments else self._committed[0])

    # -- opening ---------------------------------------------------------------------------
    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:016d}.seg"

    def _recover(self) -> tuple[Position, list[int], int]:
        segments = sorted(int(p.stem) for p in self.directory.glob("*.seg"))
        committed = Position(segments[0] if segments else 0, 0)
        with contextlib.suppress(FileNotFoundError, ValueError):
            seg, off = (self.directory / "committed").read_text().split()
            committed = Position(int(seg), int(off))
        for segment in [s for s in segments if s < committed.segment]:
            self._path(segment).unlink()  # delivered; the checkpoint was written first
        segments = [s for s in segments if s >= committed.segment]
        if segments and segments[0] > committed.segment:  # its segment is gone: start after
            committed = Position(segments[0], 0)
        records = 0
        for segment in segments:
            path = self._path(segment)
            data = path.read_bytes()
            found, valid = decode_all(data)
            if valid < len(data):  # torn tail from a crash mid-append
                with path.open("r+b") as f:
                    f.truncate(valid)
            skip = committed.offset if segment == committed.segment else 0
            records += len(found) if not skip else len(decode_all(data[skip:valid])[0])
        return committed, segments, records

    def _open_segment(self, segment: int) -> None:
        if not self._segments or self._segments[-1] != segment:
            self._segments.append(segment)
        self._writing = segment
        self._file = self._path(segment).open("ab")
        self._end = Position(segment, self._file.tell())

    # -- writing ---------------------------------------------------------------------------
    def append(self, records: Sequence[Record]) -> int:
        """Append in order; returns how many fit (the rest is refused: the spool is full)."""
        frames = [encode(r) for r in records]
        with self._lock:
            taken = 0
            for frame in frames:
                if self._bytes + len(frame) > self._max_bytes:
                    self._refused = True
                    break
                if self._end.offset and self._end.offset + len(frame) > self._segment_bytes:
                    self._file.close()
                    self._open_segment(self._writing + 1)
                self._file.write(frame)
                self._end = Position(self._writing, self._end.offset + len(frame))
                self._bytes += len(frame)
                taken += 1
            if taken:
                self._file.flush()  # into the OS now: a collector crash loses nothing
                self._records += taken
                self._dirty = True
                if self._fsync_interval_s <= 0:
                    self._fsync_locked()
            return taken

    def sync(self, force: bool = False) -> None:
        """fsync when the interval has passed (or now, when forced)."""
        with self._lock:
            due = time.monotonic() - self._last_sync >= self._fsync_interval_s
            if self._dirty and (force or due):
                self._fsync_locked()

    def _fsync_locked(self) -> None:
        os.fsync(self._file.fileno())
        self._last_sync = time.monotonic()
        self._dirty = False

    # -- reading and committing ------------------------------------------------------------
    def read(self, max_records: int) -> tuple[list[Record], Position]:
        """The oldest undelivered records (up to `max_records`) and the position after them."""
        with self._lock:
            position, end, segments = self._committed, self._end, list(self._segments)
        records: list[Record] = []
        for i, segment in enumerate(s for s in segments if s >= position.segment):
            offset = position.offset if i == 0 else 0
            with self._path(segment).open("rb") as f:
                limit = end.offset if segment == end.segment else os.fstat(f.fileno()).st_size
                f.seek(offset)
                data = f.read(min(limit - offset, _READ_CHUNK))
                if len(data) >= _FRAME.size:  # a record bigger than the chunk: read it whole
                    whole = _FRAME.size + _FRAME.unpack_from(data)[0]
                    if len(data) < whole <= limit - offset:
                        data += f.read(whole - len(data))
            found, used = decode_all(data, max_records - len(records))
            records.extend(found)
            position = Position(segment, offset + used)
            if len(records) >= max_records or offset + used < limit or segment == end.segment:
                break
            position = Position(segment + 1, 0)  # this one is exhausted: the next begins
        return records, position

    def commit(self, position: Position, count: int) -> None:
        """Records up to `position` (`count` of them) are in Kafka: forget them."""
        with self._lock:
            self._committed = position
            self._records -= count
            if self._records == 0:  # drained: start afresh so the disk is freed at once
                self._file.close()
                self._open_segment(self._writing + 1)
                self._committed = self._end
            checkpoint = self.directory / "committed.tmp"
            checkpoint.write_text(f"{self._committed.segment} {self._committed.offset}")
            os.replace(checkpoint, self.directory / "committed")
            for segment in [s for s in self._segments if s < self._committed.segment]:
                path = self._path(segment)
                self._bytes -= path.stat().st_size
                path.unlink()
                self._segments.remove(segment)
            self._refused = False

    # -- state -----------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Records waiting for Kafka."""
        return self._records

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def empty(self) -> bool:
        # By count, not position: empty segments left by a restart hold no records.
        return self._records == 0

    @property
    def full(self) -> bool:
        """A record was refused since space was last freed."""
        return self._refused

    def close(self) -> None:
        with self._lock:
            if self._dirty:
                self._fsync_locked()
            self._file.close()
