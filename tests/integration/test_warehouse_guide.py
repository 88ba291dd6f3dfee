"""Every SQL query of docs/warehouse.md runs on ClickHouse 18.16 and on chdb, over traffic
from the built-in generator sent through the collector's own event path."""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from collector.http import Request
from collector.metrics import Metrics
from collector.server import build_routes
from collector.sinks.memory import MemorySink
from schemas.migrate import migrate
from schemas.warehouse import Warehouse, connect
from trackpipe.settings import Settings
from trackpipe.traffic import USER_AGENTS, generate

pytestmark = pytest.mark.integration

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "warehouse.md"
QUERIES = re.findall(r"```sql\n(.*?)```", GUIDE.read_text(), re.S)


def demo_events() -> list[bytes]:
    settings = Settings(_env_file=None)
    sink = MemorySink()
    routes = build_routes(settings, sink, Metrics())
    cookies: dict[str, str] = {}
    for beacon in generate(250, seed=11):
        visitor = cookies.setdefault(beacon.device, uuid.uuid4().hex)
        headers = {"user-agent": USER_AGENTS[beacon.kind], "cookie": f"tp_vid={visitor}"}
        routes(Request("GET", "/i", beacon.query, headers, b"", "203.0.113.9"))
    return [value for _, value in sink.records[settings.topic_raw]]


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return demo_events()


@pytest.fixture(scope="module")
def events(lines: list[bytes]) -> list[dict]:
    """As the warehouse sees them: event time in whole seconds."""
    return [e | {"ts": e["ts_ms"] // 1000} for e in map(orjson.loads, lines)]


@pytest.fixture(scope="module", params=["clickhouse", "chdb"])
def loaded(
    request: pytest.FixtureRequest, lines: list[bytes], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Warehouse]:
    if request.param == "clickhouse":
        server = request.getfixturevalue("clickhouse_server")
        url = f"clickhouse://{server}/guide_{uuid.uuid4().hex[:8]}"
    else:
        url = f"chdb://{tmp_path_factory.mktemp('guide')}?database=guide"
    with connect(url) as wh:
        migrate(wh)
        wh.insert_json("events", lines)
        yield wh
        if request.param == "clickhouse":
            wh.execute(f"DROP DATABASE {wh.database}")


def query_with(marker: str) -> str:
    return next(q for q in QUERIES if marker in q)


def run(wh: Warehouse, sql: str) -> list[tuple]:
    return wh.query(sql.replace("trackpipe.", f"{wh.database}."))


def test_the_guide_has_at_least_ten_questions() -> None:
    assert len(QUERIES) >= 10


@pytest.mark.parametrize("number", range(len(QUERIES)))
def test_every_query_runs(loaded: Warehouse, number: int) -> None:
    sql = QUERIES[number]
    if " OVER (" in sql and loaded.version() < (21, 1):
        pytest.skip("window functions need ClickHouse 21.1+; the guide gives the alternative")
    rows = run(loaded, sql)
    # Phone → desktop needs at least one such journey; the rest always have rows here.
    if "email_open" not in sql:
        assert rows, f"query {number + 1} returned nothing"


def test_cross_device_share_matches_a_direct_computation(
    loaded: Warehouse, events: list[dict]
) -> None:
    by_user: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        if e["user_id"] and not e["is_bot"]:
            by_user[e["user_id"]].append(e)
    conversions = crossed = 0
    for evs in by_user.values():
        for p in (e for e in evs if e["event_type"] == "purchase"):
            conversions += 1
            crossed += len({e["device_id"] for e in evs if e["ts"] <= p["ts"]}) > 1
    [(total, cross, _share)] = run(loaded, query_with("devices_before"))
    assert (total, cross) == (conversions, crossed) and conversions > 0


def test_devices_per_customer_matches_a_direct_computation(
    loaded: Warehouse, events: list[dict]
) -> None:
    devices: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e["user_id"]:
            devices[e["user_id"]].add(e["device_id"])
    expected: dict[int, int] = defaultdict(int)
    for d in devices.values():
        expected[len(d)] += 1
    assert {
        int(n): c for n, c in run(loaded, query_with("uniqExact(device_id) AS devices"))
    } == dict(expected)


def test_queries_never_see_raw_emails(lines: list[bytes]) -> None:
    assert b"@example.com" not in b"".join(lines).lower()
