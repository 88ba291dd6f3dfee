"""Migrations and the warehouse interface on ClickHouse 18.16 (server) and current chdb."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from schemas.events import Event
from schemas.migrate import apply_retention, context, migrate, plan
from schemas.migrations import MIGRATIONS
from schemas.tables import EVENTS_COLUMNS
from schemas.warehouse import Warehouse, connect

pytestmark = pytest.mark.integration

HOSTILE = "x'); DROP TABLE events; --\\\n\t\"é😀"


@pytest.fixture(params=["clickhouse", "chdb"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    if request.param == "clickhouse":
        url = request.getfixturevalue("clickhouse_db")
    else:
        url = f"chdb://{tmp_path / 'chdb'}?database=wh_test"
    with connect(url) as wh:
        yield wh


def test_migrations_apply_once_and_are_recorded(warehouse: Warehouse) -> None:
    first = migrate(warehouse)
    assert [s.migration.name for s in first] == [m.name for m in MIGRATIONS]
    assert first[0].migration.name == "events"
    assert migrate(warehouse) == [] and plan(warehouse, context(warehouse)) == []
    rows = warehouse.query(
        f"SELECT version, name FROM {warehouse.database}.schema_migrations ORDER BY version"
    )
    assert rows == [(m.version, m.name) for m in MIGRATIONS]


def test_newer_features_only_where_supported(warehouse: Warehouse) -> None:
    migrate(warehouse)
    [(kind,)] = warehouse.query(
        "SELECT type FROM system.columns WHERE database = %(db)s AND table = 'events' "
        "AND name = 'event_type'",
        {"db": warehouse.database},
    )
    modern = warehouse.version() >= (19, 3)
    assert kind == ("LowCardinality(String)" if modern else "String")


def test_hostile_strings_round_trip_as_data(warehouse: Warehouse) -> None:
    migrate(warehouse)
    row = {
        name: 0 if kind in ("UInt8", "UInt64", "Float64", "DateTime") else HOSTILE
        for name, kind in EVENTS_COLUMNS
    }
    row["consent"] = [HOSTILE, "analytics"]
    row |= {"ts_ms": 1_764_000_000_000, "event_id": "e1"}
    warehouse.insert("events", EVENTS_COLUMNS, [row])
    # and the sink's path: the collector's own JSON, parsed by the server
    hostile = Event(
        event_id="e2",
        event_type="x",
        site_id="s",
        device_id="d",
        device_kind="cookie",
        ts_ms=1_764_000_000_000,
        received_ms=1,
        url=HOSTILE,
        user_agent=HOSTILE,
        consent=[HOSTILE, "analytics"],
        props={HOSTILE: HOSTILE},
    )
    warehouse.insert_json("events", [orjson.dumps(hostile.model_dump())])
    got = warehouse.query(
        f"SELECT url, toUnixTimestamp(ts), consent FROM {warehouse.database}.events "
        "WHERE user_agent = %(ua)s",
        {"ua": HOSTILE},
    )
    assert [(r[0], r[1], list(r[2])) for r in got] == [
        (HOSTILE, 1_764_000_000, [HOSTILE, "analytics"])
    ] * 2
    [(props,)] = warehouse.query(
        f"SELECT props FROM {warehouse.database}.events WHERE event_id = 'e2'"
    )
    assert orjson.loads(props) == {HOSTILE: HOSTILE}


def test_dicts_are_inserted_as_one_array_whatever_they_hold(warehouse: Warehouse) -> None:
    """`insert_dicts` sends the rows as one JSON array without its brackets: every row
    arrives, with values holding the separators (commas, braces, newlines) intact, and
    unknown keys skipped, on 18.16 and on current ClickHouse."""
    migrate(warehouse)
    tricky = ['},{"event_id":"forged"}', "a,b\n{c}", HOSTILE, ""]
    rows = [
        event(f"d{i}", 1_764_000_000 + i, url=text, unknown_key={"x": [1, 2]})
        for i, text in enumerate(tricky * 25)
    ]
    warehouse.insert_dicts("events", rows)
    got = warehouse.query(f"SELECT event_id, url FROM {warehouse.database}.events ORDER BY ts")
    assert got == [(row["event_id"], row["url"]) for row in rows]


def test_an_insert_after_the_server_dropped_an_idle_connection_succeeds(
    clickhouse_db: str,
) -> None:
    """The server closes a kept-alive HTTP connection idle for its keep_alive_timeout (3 s
    in both configs): the next insert goes out on a new connection instead of failing
    (the identity stage's rows were retried after a warning, seconds later)."""
    with connect(clickhouse_db) as wh:
        migrate(wh)
        big = "x" * 200_000  # bigger than a socket buffer: sending it meets the closed socket
        wh.insert_dicts("events", [event("a", DAY, url=big)])
        time.sleep(4.5)
        wh.insert_dicts("events", [event("b", DAY + 1, url=big)])
        time.sleep(4.5)
        wh.insert_dicts("events", [event("c", DAY + 2)])
        got = wh.query(f"SELECT event_id FROM {wh.database}.events ORDER BY ts")
    assert got == [("a",), ("b",), ("c",)]


def event(event_id: str, ts: int, **fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        name: 0 if kind in ("UInt8", "UInt64", "Float64", "DateTime") else ""
        for name, kind in EVENTS_COLUMNS
    }
    row["consent"] = []
    row |= {"event_id": event_id, "ts_ms": ts * 1000, "received_ms": ts * 1000, "site_id": "shop"}
    return row | fields


DAY = 1_764_000_000  # 2025-11-24


def test_dashboards_and_funnel_follow_inserts(warehouse: Warehouse) -> None:
    migrate(warehouse)
    rows = [
        event("a1", DAY, device_id="A", event_type="page_view", channel="email"),
        event("a2", DAY + 60, device_id="A", event_type="add_to_cart", channel="email"),
        event(
            "a3",
            DAY + 120,
            device_id="A",
            event_type="purchase",
            revenue=30.0,
            channel="email",
            user_id="u1",
        ),
        event("b1", DAY + 5, device_id="B", event_type="page_view", channel="direct"),
        event("c1", DAY + 9, device_id="C", event_type="page_view", is_bot=1),
    ]
    warehouse.insert("events", EVENTS_COLUMNS, rows)
    db = warehouse.database
    [(events, devices, persons)] = warehouse.query(
        f"SELECT countMerge(events), uniqMerge(devices), uniqMerge(persons) "
        f"FROM {db}.daily_activity WHERE site_id = 'shop'"
    )
    assert (events, devices, persons) == (4, 2, 3)  # the bot is left out; u1 is a person of A
    mix = warehouse.query(
        f"SELECT channel, countMerge(events), sumMerge(revenue) FROM {db}.channel_mix_daily "
        f"GROUP BY channel ORDER BY channel"
    )
    assert [tuple(r) for r in mix] == [("direct", 1, 0.0), ("email", 3, 30.0)]
    funnel = warehouse.query(
        f"SELECT level, devices FROM {db}.funnel_daily WHERE site_id = 'shop' ORDER BY level"
    )
    assert [tuple(r) for r in funnel] == [(1, 1), (3, 1)]


def test_retention_keeps_recent_months(warehouse: Warehouse) -> None:
    migrate(warehouse)
    import time

    now = int(time.time())
    old = 1_577_836_800  # 2020-01-01
    warehouse.insert("events", EVENTS_COLUMNS, [event("old", old), event("new", now)])
    c = context(warehouse)
    statements = apply_retention(warehouse, 30, c)
    assert statements, "retention must do something with a 2020 row present"
    if c.features.ttl:
        assert "TTL" in statements[0]
        warehouse.execute(f"OPTIMIZE TABLE {warehouse.database}.events FINAL")
    else:
        assert statements == [f"ALTER TABLE {warehouse.database}.events DROP PARTITION 202001"]
    ids = warehouse.query(f"SELECT event_id FROM {warehouse.database}.events")
    assert [r[0] for r in ids] == ["new"]


def test_migrate_plan_shows_and_applies_nothing_then_migrate_applies(clickhouse_db: str) -> None:
    from trackpipe.processes import run_trackpipe

    o = {"warehouse_url": clickhouse_db}
    plan_out = run_trackpipe(["migrate", "--plan"], o)
    assert "ClickHouse 18.16" in plan_out and "pending 0001 events" in plan_out
    assert "CREATE TABLE IF NOT EXISTS" in plan_out and "LowCardinality" not in plan_out
    with connect(clickhouse_db) as wh:
        assert wh.query(
            "SELECT count() FROM system.tables WHERE database = %(db)s AND name = 'events'",
            {"db": wh.database},
        ) == [(0,)]
    assert "applied 0001 events" in run_trackpipe(["migrate"], o)
    assert "up to date" in run_trackpipe(["migrate"], o)
