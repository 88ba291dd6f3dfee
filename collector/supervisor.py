"""Several collector processes on one port: a parent that starts, watches and stops them.

Each child binds the port with SO_REUSEPORT (the kernel spreads connections over them)
and has its own producer and its own spool directory (`<spool dir>/<index>`). The parent
forwards SIGTERM/SIGINT, so each child flushes what it holds, and restarts a child that
died on its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import subprocess
import sys
import time
from types import FrameType

from trackpipe.settings import Settings

log = logging.getLogger(__name__)


def _start(index: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "trackpipe", "collector", "--child", str(index)],
        preexec_fn=_term_with_parent,  # safe here: the supervisor runs no other threads
    )


def _term_with_parent() -> None:
    # Should the supervisor be killed outright, its children still flush and exit (Linux).
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def supervise(settings: Settings) -> int:
    n = settings.collector_processes
    children = {i: _start(i) for i in range(n)}
    stopping: list[int] = []

    def forward(sig: int, _frame: FrameType | None) -> None:
        stopping.append(sig)
        for child in children.values():
            if child.poll() is None:
                child.send_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    log.info("collector supervisor: %d processes on port %d", n, settings.collector_port)
    restarts: dict[int, float] = {}
    while not stopping:
        for index, child in list(children.items()):
            code = child.poll()
            if code is None or stopping:
                continue
            # A child crashing at start must not spin: at most one restart per 5 s each.
            if time.monotonic() - restarts.get(index, 0.0) < 5:
                continue
            log.error("collector process %d exited with %s: restarting it", index, code)
            restarts[index] = time.monotonic()
            children[index] = _start(index)
        time.sleep(0.2)
    deadline = time.monotonic() + settings.collector_shutdown_timeout_s + 10
    codes = []
    for index, child in children.items():
        try:
            codes.append(child.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            log.error("collector process %d did not stop in time: killing it", index)
            child.kill()
            codes.append(child.wait())
    # A child still starting when the signal came dies of it: it had acknowledged nothing.
    clean = {0, *(-sig for sig in stopping)}
    return 0 if all(code in clean for code in codes) else 1
