"""The signals tables on ClickHouse 18.16 (server) and current ClickHouse (chdb): the stage's
rows go in, FINAL gives the latest state, and the export query runs on both."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from schemas.migrate import migrate
from schemas.signals import AttributedBatch, Merge
from schemas.warehouse import Warehouse, connect
from streams.audiences import parse_audiences
from streams.person_updates import on_batch, on_merge
from streams.profiles import DAY_MS, SignalsConfig
from streams.signal_rows import Output
from streams.signals import COLUMNS
from streams.signals_views import _MEMBERS

pytestmark = pytest.mark.integration

T0 = 1_764_000_000_000
CFG = SignalsConfig(required_consent="")
AUDIENCES = parse_audiences("[audience.viewers]\nrule = 'count(days=7) >= 2'", CFG)


@pytest.fixture(params=["clickhouse", "chdb"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    if request.param == "clickhouse":
        url = request.getfixturevalue("clickhouse_db")
    else:
        url = f"chdb://{tmp_path / 'chdb'}?database=signals_test"
    with connect(url) as wh:
        migrate(wh)
        yield wh


def write(wh: Warehouse, out: Output) -> None:
    for table, rows in out.rows.items():
        if rows:
            wh.insert(table, COLUMNS[table], rows)


def batch(person: str, *events: tuple[str, str, int]) -> AttributedBatch:
    return AttributedBatch.model_validate(
        {
            "person_id": person,
            "events": [
                {
                    "event_id": eid,
                    "event_type": kind,
                    "ts_ms": T0 + day * DAY_MS,
                    "device_id": f"d-{person}",
                    "category": "x'); DROP TABLE profiles; --",
                    "channel": "email",
                    "device_type": "mobile",
                    "timezone": "Europe/Paris",
                }
                for eid, kind, day in events
            ],
        }
    )


def test_stage_rows_round_trip_and_latest_state_wins(warehouse: Warehouse) -> None:
    wh, db = warehouse, warehouse.database
    first = on_batch(None, batch("p1", ("e1", "page_view", 0)), CFG, AUDIENCES)
    second = on_batch(
        orjson.dumps(first.state),
        batch("p1", ("e2", "purchase", 1)),
        CFG,
        AUDIENCES,
    )
    write(wh, first.output)
    write(wh, second.output)
    write(wh, second.output)  # a redelivery writes the same rows again
    rows = wh.query(
        f"SELECT person_id, version, lifecycle, purchases, channels, channel_shares, best_hour, "
        f"cookie_ids, audiences FROM {db}.profiles FINAL"
    )
    hour = (T0 // 3_600_000 + 1) % 24  # Paris is UTC+1 in November
    assert rows == [("p1", 2, "first_purchase", 1, ["email"], [1.0], hour, ["d-p1"], ["viewers"])]
    [(category, version)] = wh.query(f"SELECT category, version FROM {db}.interests FINAL")
    assert category == "x'); DROP TABLE profiles; --" and version == 2
    members = wh.query(
        _MEMBERS.format(db=db, s=""), {"audience": "viewers", "after": "", "limit": 10}
    )
    assert [(m[0], list(m[1])) for m in members] == [("p1", ["d-p1"])]
    assert wh.query(f"SELECT stage, at_ms FROM {db}.lifecycle_moments FINAL") == [
        ("first_purchase", T0 + DAY_MS)
    ]

    # merged away: the loser's last row says where it went, and it leaves the export
    gone = on_merge("p1", orjson.dumps(second.state), Merge(**{"from": "p1", "into": "p9"}), CFG)
    write(wh, gone.output)
    assert wh.query(f"SELECT merged_into, version FROM {db}.profiles FINAL") == [("p9", 3)]
    assert (
        wh.query(_MEMBERS.format(db=db, s=""), {"audience": "viewers", "after": "", "limit": 9})
        == []
    )
    [(exited,)] = wh.query(
        f"SELECT toUInt32(exited_at) FROM {db}.audience_members FINAL WHERE person_id = 'p1'"
    )
    assert exited == (T0 + DAY_MS) // 1000


GUIDE = Path(__file__).resolve().parents[2] / "docs" / "signals.md"
QUERIES = re.findall(r"```sql\n(.*?)```", GUIDE.read_text(), re.S)


def test_every_query_of_the_signals_guide_runs(warehouse: Warehouse) -> None:
    audiences = parse_audiences("[audience.buyers]\nrule = 'purchases >= 1'", CFG)
    states: dict[str, bytes | None] = {}
    for day in range(3):
        for person in ("p1", "p2", "p3"):
            events = [
                {
                    "event_id": f"{person}-{day}-{i}",
                    "event_type": kind,
                    "ts_ms": T0 + day * DAY_MS + i,
                    "device_id": f"{person}-{device}",
                    "device_type": device,
                    "email_hash": f"h-{person}",
                    "category": "shoes",
                    "revenue": 10.0,
                }
                for i, (kind, device) in enumerate(
                    [("email_open", "mobile"), ("purchase", "desktop"), ("email_sent", "")]
                    + [("email_sent", "")] * 5
                )
            ]
            message = AttributedBatch.model_validate({"person_id": person, "events": events})
            update = on_batch(states.get(person), message, CFG, audiences)
            states[person] = orjson.dumps(update.state)
            write(warehouse, update.output)
    assert len(QUERIES) >= 6
    for sql in QUERIES:
        rows = warehouse.query(sql.replace("trackpipe.", f"{warehouse.database}."))
        assert rows, sql


def test_erasure_removes_the_person_from_every_signals_table(warehouse: Warehouse) -> None:
    from trackpipe.erasure import Identifier, erase

    for person in ("p1", "p2"):
        message = batch(person, (f"{person}-1", "purchase", 0), (f"{person}-2", "page_view", 1))
        write(warehouse, on_batch(None, message, CFG, AUDIENCES).output)
    db = warehouse.database
    tables = ("profiles", "interests", "audience_members", "lifecycle_moments")

    def persons() -> dict[str, set[str]]:
        return {
            t: {r[0] for r in warehouse.query(f"SELECT person_id FROM {db}.{t}")} for t in tables
        }

    assert persons() == {t: {"p1", "p2"} for t in tables}
    report = erase(warehouse, Identifier("device", "d-p1"))
    assert set(tables) <= set(report.tables)
    assert persons() == {t: {"p2"} for t in tables}
