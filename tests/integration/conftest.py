"""Real servers for integration tests, once per session.

Kafka (Apache Kafka 4.x, KRaft) and ClickHouse (Debian's server) are reused when already
listening (`make services`), else started with the project's own scripts and stopped at the
end. Each test gets its own topics, consumer group and database.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from schemas.warehouse import Warehouse, connect
from trackpipe.embedded import start_tansu
from trackpipe.processes import free_port, stop

ROOT = Path(__file__).resolve().parents[2]
KAFKA_PORT = int(os.environ.get("TRACKPIPE_KAFKA_PORT", "9092"))
CLICKHOUSE_PORT = int(os.environ.get("TRACKPIPE_CLICKHOUSE_PORT", "9000"))


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@contextmanager
def _service(script: str, port: int) -> Iterator[None]:
    started = False
    if not _listening(port):
        subprocess.run([str(ROOT / "services" / script), "start"], check=True)
        started = True
    yield
    if started:  # leave servers we merely reused running
        subprocess.run([str(ROOT / "services" / script), "stop"], check=False)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with _service("kafka.sh", KAFKA_PORT):
        yield f"127.0.0.1:{KAFKA_PORT}"


@pytest.fixture(scope="session")
def clickhouse_server() -> Iterator[str]:
    with _service("clickhouse.sh", CLICKHOUSE_PORT):
        yield f"127.0.0.1:{CLICKHOUSE_PORT}"


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def clickhouse_db(clickhouse_server: str, uid: str) -> Iterator[str]:
    """A fresh database on the real server, dropped afterwards."""
    url = f"clickhouse://{clickhouse_server}/test_{uid}"
    yield url
    with connect(url) as wh:
        wh.execute(f"DROP DATABASE IF EXISTS {wh.database}")


@pytest.fixture
def own_clickhouse(tmp_path: Path):
    """A ClickHouse server of this test's own, which it may stop and start."""
    port, http = free_port(), free_port()
    env = dict(
        os.environ,
        TRACKPIPE_CLICKHOUSE_PORT=str(port),
        TRACKPIPE_CLICKHOUSE_HTTP_PORT=str(http),
        TRACKPIPE_SERVICES_DIR=str(tmp_path / "services"),
    )
    script = str(ROOT / "services" / "clickhouse.sh")

    def control(action: str) -> None:
        subprocess.run([script, action], env=env, check=True, capture_output=True)

    control("start")
    yield port, http, control
    control("stop")


@dataclass
class Stack:
    """Where a pipeline under test runs: broker, warehouse and the settings pointing at them."""

    name: str
    overrides: dict[str, object]

    @property
    def bootstrap(self) -> str:
        return str(self.overrides["kafka_bootstrap"])

    def warehouse(self) -> Warehouse:
        return connect(str(self.overrides["warehouse_url"]))


def _overrides(uid: str, bootstrap: str, warehouse_url: str, tmp: Path) -> dict[str, object]:
    return {
        "kafka_bootstrap": bootstrap,
        "warehouse_url": warehouse_url,
        "topic_raw": f"raw-{uid}",
        "topic_dead": f"dead-{uid}",
        "topic_suppressions": f"suppressions-{uid}",
        # The stages' own topics too: on the shared broker, a worker would read every
        # earlier test's attributed events from the start.
        "topic_attributed": f"attributed-{uid}",
        "topic_signals": f"signals-{uid}",
        "app_id": f"trackpipe-test-{uid}",
        "collector_port": free_port(),
        "worker_web_port": free_port(),
        "worker_data_dir": tmp / "worker",
        "collector_spool_dir": tmp / "spool",
        "sink_batch_seconds": 0.2,
        "kafka_session_timeout_s": 10,
    }


@pytest.fixture(params=["kafka+clickhouse", "embedded"])
def stack(request: pytest.FixtureRequest, uid: str, tmp_path: Path) -> Iterator[Stack]:
    """The same pipeline on real Apache Kafka + ClickHouse 18.16, and on Tansu + chdb."""
    if request.param == "kafka+clickhouse":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        url = request.getfixturevalue("clickhouse_db")
        yield Stack(request.param, _overrides(uid, bootstrap, url, tmp_path))
        return
    port = free_port()
    broker = start_tansu(port, tmp_path / "logs")
    o = _overrides(uid, f"127.0.0.1:{port}", f"chdb://{tmp_path / 'warehouse'}", tmp_path)
    o |= {"kafka_idempotence": False, "kafka_session_timeout_s": 6}
    try:
        yield Stack(request.param, o)
    finally:
        stop(broker)


@pytest.fixture
def stack_warehouse(stack: Stack) -> Callable[[], Warehouse]:
    return stack.warehouse
