"""Run stitching workers as real processes on real Kafka + ClickHouse, and read what they wrote."""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from schemas.migrate import migrate
from schemas.tables import DEVICE_SESSIONS_COLUMNS, SESSIONS_COLUMNS
from schemas.warehouse import connect
from streams.signals import signals_topics
from trackpipe.kafka_admin import ensure_topics
from trackpipe.processes import Proc, free_port, http_get, start_trackpipe, wait_http
from trackpipe.settings import Settings


class StreamsRun:
    def __init__(self, bootstrap: str, warehouse_url: str, uid: str, tmp: Path) -> None:
        self.overrides: dict[str, object] = {
            "kafka_bootstrap": bootstrap,
            "warehouse_url": warehouse_url,
            "topic_raw": f"raw-{uid}",
            "topic_dead": f"dead-{uid}",
            "topic_suppressions": f"suppressions-{uid}",
            "topic_attributed": f"attributed-{uid}",
            "topic_signals": f"signals-{uid}",
            "app_id": f"trackpipe-streams-{uid}",
            "kafka_session_timeout_s": 10,
            "identity_flush_seconds": 0.5,
            "identity_batch_size": 200,
        }
        self.tmp = tmp
        self.settings = Settings(_env_file=None, **self.overrides)  # type: ignore[arg-type]
        self.workers: dict[str, tuple[Proc, int]] = {}
        with connect(warehouse_url) as wh:
            migrate(wh)
        ensure_topics(self.settings)
        ensure_topics(self.settings, signals_topics(self.settings))

    def produce(
        self,
        events: list[dict],
        closers: list[dict] = (),  # type: ignore[assignment]
        partitions: int | None = None,
    ) -> None:
        """Events keyed by device; with `partitions`, each device's on one of the first
        `partitions` partitions only (the others get none)."""
        producer = KafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap.split(","), acks="all", linger_ms=5
        )
        for e in events:
            key = e["device_id"].encode()
            p = None if partitions is None else zlib.crc32(key) % partitions
            producer.send(self.settings.topic_raw, orjson.dumps(e), key=key, partition=p)
        for p, e in enumerate(closers):  # one per partition: moves every watermark on
            producer.send(self.settings.topic_raw, orjson.dumps(e), partition=p)
        producer.flush()
        producer.close()

    def start(self, name: str) -> None:
        port = free_port()
        overrides = self.overrides | {
            "worker_web_port": port,
            "worker_data_dir": self.tmp / name,
        }
        proc = start_trackpipe(name, ["worker"], overrides, self.tmp / "logs")
        wait_http(proc, f"http://127.0.0.1:{port}/identity/")
        self.workers[name] = (proc, port)

    def _from_each_worker(self, path: str) -> dict[str, Any]:
        """GET `path` from each live worker: its JSON body, else the status or the error."""
        found: dict[str, Any] = {}
        for name, (proc, port) in self.workers.items():
            if proc.alive():
                try:
                    status, body = http_get(f"http://127.0.0.1:{port}{path}")
                except OSError as exc:
                    found[name] = exc
                    continue
                found[name] = orjson.loads(body) if status == 200 else status
        return found

    def stats(self) -> list[dict[str, Any]]:
        return [s for s in self._from_each_worker("/identity/").values() if isinstance(s, dict)]

    def signals_stats(self) -> dict[str, Any]:
        """Each live worker's signals-stage counters (what a failed comparison reports)."""
        return self._from_each_worker("/signals/stats/")

    def diagnosis(self, lines: int = 60) -> str:
        """Counters and the log tails of every worker, for a failure message."""
        logs = "\n".join(
            f"--- {name}:\n{proc.tail(lines)}" for name, (proc, _) in self.workers.items()
        )
        return f"identity: {self.stats()}\nsignals: {self.signals_stats()}\n{logs}"

    def wait_flushed(self, events: int, timeout_s: float = 120.0) -> dict[str, Any]:
        """Wait until the owner has flushed state and rows covering `events` input events."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for s in self.stats():
                # Counters as of a completed flush: durable, even if ownership moved since.
                done = s["flushed"].get("events", 0) + s["flushed"].get("late", 0)
                if done >= events:
                    return s
            time.sleep(0.2)
        logs = "\n".join(proc.tail(40) for proc, _ in self.workers.values())
        raise AssertionError(f"not flushed after {timeout_s}s: {self.stats()}\n{logs}")

    def rows(self, table: str) -> list[dict[str, Any]]:
        columns = {"sessions": SESSIONS_COLUMNS, "device_sessions": DEVICE_SESSIONS_COLUMNS}
        names = [n for n, _ in columns[table]]
        with connect(str(self.overrides["warehouse_url"])) as wh:
            got = wh.query(f"SELECT {', '.join(names)} FROM {wh.database}.{table} FINAL")
        return [dict(zip(names, r, strict=True)) for r in got]

    def identities(self) -> dict[str, tuple]:
        with connect(str(self.overrides["warehouse_url"])) as wh:
            got = wh.query(
                "SELECT id_type, id_value, person_id, first_seen_ms, last_seen_ms "
                f"FROM {wh.database}.identities FINAL"
            )
        return {f"{t}:{v}": (p, f, last) for t, v, p, f, last in got}

    def counts(self, table: str, key: str) -> tuple[int, int]:
        """(rows after FINAL, distinct keys): equal when the de-duplication rule holds."""
        with connect(str(self.overrides["warehouse_url"])) as wh:
            [(rows, keys)] = wh.query(
                f"SELECT count(), uniqExact({key}) FROM {wh.database}.{table} FINAL"
            )
        return int(rows), int(keys)

    def interests(self) -> dict[tuple[str, str], float]:
        """(person_id, category) → score of every person not merged away, from its newest
        interest rows (a person's rows below its newest version are categories it lost)."""
        with connect(str(self.overrides["warehouse_url"])) as wh:
            db = wh.database
            merged = {p for (p,) in wh.query(
                f"SELECT person_id FROM {db}.profiles FINAL WHERE merged_into != ''")}  # fmt: skip
            rows = wh.query(f"SELECT person_id, category, score, version FROM {db}.interests FINAL")
        newest: dict[str, int] = {}
        for pid, _, _, version in rows:
            newest[pid] = max(newest.get(pid, 0), version)
        return {
            (pid, category): score
            for pid, category, score, version in rows
            if version == newest[pid] and pid not in merged
        }

    def wait_interests(
        self, expected: dict[tuple[str, str], float], timeout_s: float = 90.0
    ) -> dict[tuple[str, str], float]:
        """The stage writes profiles a little after identity flushed: wait until they agree
        (or the time is up), and return what was read last."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.interests()
            if not score_diff(got, expected) or time.monotonic() > deadline:
                return got
            time.sleep(1.0)


Scores = dict[tuple[str, str], float]


def _differences(got: Scores, want: Scores) -> dict[str, list]:
    """Every (person, category) missing, extra, or with another score, sorted."""
    return {
        "missing": sorted(want.keys() - got.keys()),
        "extra": sorted(got.keys() - want.keys()),
        "scores": [
            (k, got[k], want[k])
            for k in sorted(want.keys() & got.keys())
            if abs(got[k] - want[k]) > 1e-9 * max(1.0, want[k])
        ],
    }


def score_counts(got: Scores, want: Scores) -> str:
    """How many (person, category) scores are missing, extra or different, of how many."""
    d = _differences(got, want)
    return (
        f"{len(d['missing'])} missing, {len(d['extra'])} extra, "
        f"{len(d['scores'])} different, of {len(want)} expected"
    )


def score_diff(got: Scores, want: Scores) -> dict:
    """What differs (at most 5 of each kind): empty when the scores agree."""
    return {k: v[:5] for k, v in _differences(got, want).items() if v}
