"""Start, watch and stop trackpipe's own processes (used by the demo, tests and benchmarks)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def env_for(overrides: Mapping[str, object]) -> dict[str, str]:
    """The current environment plus `TRACKPIPE_<NAME>` for each settings override."""
    env = dict(os.environ)
    env.update({f"TRACKPIPE_{k.upper()}": str(v) for k, v in overrides.items()})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def start_trackpipe(
    name: str, command: list[str], overrides: Mapping[str, object], log_dir: Path
) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen(
            [sys.executable, "-m", "trackpipe", *command],
            env=env_for(overrides),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(name, popen, log_path)


def run_trackpipe(command: list[str], overrides: Mapping[str, object]) -> str:
    """Run a `trackpipe` command to completion; its output, or an error with it."""
    done = subprocess.run(
        [sys.executable, "-m", "trackpipe", *command],
        env=env_for(overrides),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"trackpipe {' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own URL
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(proc: Proc, url: str, timeout_s: float = 60.0) -> None:
    """Wait until `url` answers 200, failing early (with its log) if the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            if http_get(url, timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} not ready at {url} after {timeout_s}s:\n{proc.tail()}")


def stop(proc: Proc, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
    """Signal the process (group) and wait; SIGKILL if it does not stop in time."""
    if proc.alive():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, sig)
        try:
            proc.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(timeout=10)
    return proc.popen.returncode


def isolated_overrides(name: str) -> dict[str, object]:
    """Settings giving one run (a benchmark, say) its own topics, consumer groups and ports."""
    return {
        "app_id": name,
        "topic_raw": f"{name}-raw",
        "topic_dead": f"{name}-dead",
        "topic_suppressions": f"{name}-supp",
        "collector_port": free_port(),
        "worker_web_port": free_port(),
    }


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Pipeline:
    """A collector and a worker as separate processes, schema migrated first.

    `overrides` are settings (as for `env_for`); they must include `collector_port` and
    `worker_web_port`. Used by the demo, the end-to-end tests and the benchmarks.
    """

    def __init__(self, overrides: Mapping[str, object], log_dir: Path) -> None:
        self.overrides = dict(overrides)
        self.log_dir = log_dir
        self.collector: Proc | None = None
        self.worker: Proc | None = None

    @property
    def collector_url(self) -> str:
        return f"http://127.0.0.1:{self.overrides['collector_port']}"

    @property
    def worker_url(self) -> str:
        return f"http://127.0.0.1:{self.overrides['worker_web_port']}"

    def start(self) -> Pipeline:
        run_trackpipe(["migrate"], self.overrides)
        self.collector = start_trackpipe("collector", ["collector"], self.overrides, self.log_dir)
        self.worker = start_trackpipe("worker", ["worker"], self.overrides, self.log_dir)
        wait_http(self.collector, f"{self.collector_url}/readyz")
        wait_http(self.worker, f"{self.worker_url}/stats/")
        return self

    def worker_json(self, path: str) -> dict:
        """A worker page's JSON (`/stats/`, `/identity/`, `/signals/stats/`); {} until it
        answers 200."""
        import orjson

        status, body = http_get(f"{self.worker_url}{path}")
        return orjson.loads(body) if status == 200 else {}

    def worker_stats(self) -> dict[str, int]:
        return self.worker_json("/stats/")

    def wait_worker(
        self, path: str, done: Callable[[dict], bool], timeout_s: float
    ) -> tuple[dict, bool]:
        """Poll a worker page until `done(figures)`: the last figures it gave (a failed poll
        keeps the ones before), and whether `done` held before the timeout."""
        deadline = time.monotonic() + timeout_s
        figures: dict = {}
        while True:
            figures = self.worker_json(path) or figures
            if done(figures):
                return figures, True
            if time.monotonic() >= deadline:
                return figures, False
            time.sleep(0.2)

    def wait_rows_written(self, expected: int, timeout_s: float = 90.0) -> int:
        """Wait until the worker reports `expected` rows written; return the last count."""
        stats, _ = self.wait_worker(
            "/stats/", lambda s: s.get("rows_written", 0) >= expected, timeout_s
        )
        return stats.get("rows_written", 0)

    def wait_identity_settled(self, events: int, timeout_s: float = 90.0) -> dict:
        """Wait until the identity stage has applied `events` events, written everything it
        applied and closed every session; return its last /identity/ figures."""

        def settled(stats: dict) -> bool:
            counters = stats.get("counters") or {}
            return (
                counters.get("events", 0) + counters.get("late", 0) >= events
                and counters == stats.get("flushed")
                and stats.get("open") == {"persons": 0, "devices": 0}
            )

        stats, done = self.wait_worker("/identity/", settled, timeout_s)
        return stats | {"settled": done}

    def wait_signals_quiet(self, quiet_s: float = 3.0, timeout_s: float = 60.0) -> dict:
        """Wait until the signals stage has read something and nothing changed for
        `quiet_s` (its rows are written within `signals_flush_seconds`, 1 s by default)."""
        last: dict | None = None
        since = time.monotonic()

        def quiet(stats: dict) -> bool:
            nonlocal last, since
            figures = {k: stats.get(k) for k in ("messages", "events_applied", "rows_written")}
            if figures != last:
                last, since = figures, time.monotonic()
                return False
            return bool(stats.get("events_applied")) and time.monotonic() - since >= quiet_s

        stats, done = self.wait_worker("/signals/stats/", quiet, timeout_s)
        return stats | {"settled": done}

    def stop(self) -> None:
        if self.collector is not None:
            stop(self.collector, signal.SIGTERM)
        if self.worker is not None:
            # SIGINT: a faust worker whose agent crashed can hang on SIGTERM.
            stop(self.worker, signal.SIGINT)

    def __enter__(self) -> Pipeline:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
