"""The signals stage on real Kafka + ClickHouse: attributed batches in, profiles, audiences,
signals and the read API out; a merge combines two persons once; redeliveries count once."""

from __future__ import annotations

import math
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer

from schemas.signals import batch_message, merge_message
from tests.integration.conftest import _overrides
from trackpipe.kafka_admin import ensure_topics, read_all
from trackpipe.processes import (
    Proc,
    free_port,
    http_get,
    run_trackpipe,
    start_trackpipe,
    stop,
    wait_http,
)
from trackpipe.settings import Settings

pytestmark = pytest.mark.integration

DAY = 86_400_000
NOW = (int(time.time() * 1000) // DAY) * DAY + 12 * 3_600_000  # noon today (UTC)
KEY = "reader-key"
AUDIENCES = """
[audience.shoe_browsers]
rule = 'count(type="page_view", category="shoes", days=7) >= 3 and purchases == 0'

[audience.buyers]
rule = 'purchases >= 1'
"""


def event(eid: str, event_type: str, days_ago: float, **fields: object) -> dict[str, object]:
    return {
        "event_id": eid,
        "event_type": event_type,
        "ts_ms": int(NOW - days_ago * DAY),
        "site_id": "shop",
        "device_kind": "cookie",
        "consent": ["analytics", "marketing"],
        **fields,
    }


A_EVENTS = [
    event("a1", "page_view", 3, device_id="c1", category="shoes", user_id="u1"),
    event("a2", "page_view", 2, device_id="c1", category="shoes", channel="email"),
    event("a3", "page_view", 1, device_id="c1", category="shoes", channel="email"),
]
B_EVENTS = [
    event("b1", "page_view", 2, device_id="c2", category="shoes", device_type="mobile"),
    event("b2", "purchase", 1, device_id="c2", revenue=50.0, email_hash="h2", category="shoes"),
]
C_EVENTS = [  # bought, but never consented to marketing
    event("c1", "purchase", 1, device_id="c3", revenue=9.0, consent=["analytics"]),
]


@pytest.fixture
def overrides(kafka_bootstrap: str, clickhouse_db: str, uid: str, tmp_path: Path) -> dict:
    audiences = tmp_path / "audiences.toml"
    audiences.write_text(AUDIENCES)
    o = _overrides(uid, kafka_bootstrap, clickhouse_db, tmp_path)
    return o | {
        "topic_attributed": f"attributed-{uid}",
        "topic_signals": f"signals-{uid}",
        "signals_audiences_file": audiences,
        "signals_flush_seconds": 0.3,
        "read_api_keys": f"other-key,{KEY}",
    }


def produce(o: dict, messages: list[tuple[str, bytes]]) -> None:
    settings = Settings(_env_file=None, kafka_bootstrap=o["kafka_bootstrap"])
    ensure_topics(settings, [o["topic_attributed"], o["topic_signals"]])
    producer = KafkaProducer(bootstrap_servers=o["kafka_bootstrap"], acks="all")
    for key, value in messages:
        producer.send(o["topic_attributed"], key=key.encode(), value=value)
    producer.flush(30)
    producer.close()


@pytest.fixture
def worker(overrides: dict, tmp_path: Path) -> Iterator[Proc]:
    run_trackpipe(["migrate"], overrides)
    proc = start_trackpipe("worker", ["worker"], overrides, tmp_path / "logs")
    try:
        wait_http(proc, f"http://127.0.0.1:{overrides['worker_web_port']}/signals/stats/")
        yield proc
    finally:
        stop(proc, signal.SIGINT)


def stats(o: dict) -> dict:
    status, body = http_get(f"http://127.0.0.1:{o['worker_web_port']}/signals/stats/")
    return orjson.loads(body) if status == 200 else {}


def wait_for(o: dict, proc: Proc, **at_least: int) -> dict:
    """Wait until the stage's counters reach the given values and their rows are written."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        s = stats(o)
        if s and all(s[k] >= v for k, v in at_least.items()) and s["rows_written"]:
            time.sleep(1.0)  # one more flush interval: the rows of the last message
            return stats(o)
        assert proc.alive(), proc.tail()
        time.sleep(0.2)
    raise AssertionError(f"stage stuck at {stats(o)} waiting for {at_least}:\n{proc.tail()}")


def read(o: dict, path: str, key: str | None = KEY) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{o['worker_web_port']}{path}")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read() or b"{}"
        try:
            return exc.code, orjson.loads(body)
        except orjson.JSONDecodeError:  # e.g. faust's router while the group rebalances
            return exc.code, {"body": body.decode("utf-8", "replace")}


def query(o: dict, sql: str) -> list[tuple]:
    from schemas.warehouse import connect

    with connect(o["warehouse_url"]) as wh:
        return wh.query(sql.format(db=wh.database))


def test_profiles_audiences_merge_and_read_api(overrides: dict, worker: Proc) -> None:
    o = overrides
    a_batch = batch_message("A", A_EVENTS)
    produce(
        o,
        [
            ("A", a_batch),
            ("B", batch_message("B", B_EVENTS)),
            ("C", batch_message("C", C_EVENTS)),
            ("A", a_batch),  # redelivered as a whole
            ("B", batch_message("B", B_EVENTS[1:])),  # and in part
            ("A", b"{not json"),
            ("A", b'{"absorb": {"from": "X", "into": "A", "profile": {"pid": "X"}}}'),
            ("Z", b'{"absorb": {"from": "X", "into": "A", "profile": {}}}'),
        ],
    )
    first = wait_for(o, worker, messages=8)
    assert first["events_applied"] == 6 and first["redeliveries"] == 2
    assert first["bad_messages"] == 3  # dead-lettered, the stage goes on
    dead = [orjson.loads(v) for _, v in read_all(o["kafka_bootstrap"], o["topic_dead"])]
    assert [d["reason"] for d in dead] == ["signals_rejected"] * 3

    status, a = read(o, f"/signals/profiles/A/?at={NOW}")
    assert status == 200 and a["audiences"] == ["shoe_browsers"]
    assert a["lifecycle"] == "identified" and a["channel_affinity"] == {"email": 1.0}

    # B is merged into A: keyed by the survivor (re-keyed by the stage), then redelivered
    # keyed by the loser, and again after it was handed over.
    produce(o, [("A", merge_message("B", "A")), ("B", merge_message("B", "A"))])
    wait_for(o, worker, absorbed=1, merges=2, messages=12)
    produce(o, [("B", merge_message("B", "A")), ("A", batch_message("A", B_EVENTS))])
    after = wait_for(o, worker, messages=14)
    assert after["absorbed"] == 1 and after["events_applied"] == 6

    status, a = read(o, f"/signals/profiles/A/?at={NOW}")
    assert status == 200
    assert a["identifiers"] == {"cookie": ["c1", "c2"], "user": ["u1"], "email": ["h2"]}
    assert a["value"]["purchases"] == 1 and a["value"]["revenue"] == 50.0
    assert a["lifecycle"] == "first_purchase" and a["audiences"] == ["buyers"]
    # shoes: four views (weight 1) and a purchase (weight 8), half-life 14 days, at NOW
    expected = sum(w * 0.5 ** (d / 14) for w, d in ((1, 3), (1, 2), (1, 1), (1, 2), (8, 1)))
    [shoes] = a["top_interests"]
    assert shoes["category"] == "shoes" and math.isclose(shoes["score"], expected, rel_tol=1e-3)
    # The loser's profile is gone; its id redirects (307, followed here) to the survivor's.
    status, b = read(o, f"/signals/profiles/B/?at={NOW}")
    assert status == 200 and b == a
    status, by_cookie = read(o, "/signals/identifiers/cookie:c2/")
    assert status == 200 and by_cookie["person_id"] == "A"

    # the warehouse: latest state per person, the merge recorded, counted once
    profiles = query(
        o,
        "SELECT person_id, merged_into, purchases, revenue, lifecycle, audience_eligible "
        "FROM {db}.profiles FINAL ORDER BY person_id",
    )
    assert profiles == [
        ("A", "", 1, 50.0, "first_purchase", 1),
        ("B", "A", 1, 50.0, "first_purchase", 1),
        ("C", "", 1, 9.0, "first_purchase", 0),
    ]
    [(score,)] = query(
        o,
        "SELECT i.score * pow(2, -(toUInt32(toDateTime({now})) - toUInt32(i.as_of)) / 86400 / 14) "
        "FROM {db}.interests AS i FINAL WHERE person_id = 'A' AND category = 'shoes'".replace(
            "{now}", str(NOW // 1000)
        ),
    )
    assert math.isclose(score, expected, rel_tol=1e-3)
    spells = query(
        o,
        "SELECT audience, person_id, toUInt32(exited_at) > 0, email_hashes "
        "FROM {db}.audience_members FINAL ORDER BY audience, person_id, entered_at",
    )
    assert spells == [
        ("buyers", "A", 0, ["h2"]),
        ("buyers", "B", 1, ["h2"]),
        ("shoe_browsers", "A", 1, ["h2"]),  # rows carry the identifiers of their time
    ]

    # the export: current, consenting members only (C bought but did not consent)
    status, page = read(o, "/signals/audiences/buyers/members/?limit=10")
    assert status == 200 and page["next"] is None
    assert [(m["person_id"], m["cookie_ids"], m["email_hashes"]) for m in page["members"]] == [
        ("A", ["c1", "c2"], ["h2"])
    ]
    status, page = read(o, "/signals/audiences/buyers/members/?kind=email_hashes&limit=1")
    assert page["members"] == [
        {"person_id": "A", "email_hashes": ["h2"], "entered_at": page["members"][0]["entered_at"]}
    ]
    assert (
        page["next"] == "A"
        and read(o, "/signals/audiences/buyers/members/?after=A")[1]["members"] == []
    )

    # signals: each enter and exit once, whatever was redelivered
    records = [orjson.loads(v) for _, v in read_all(o["kafka_bootstrap"], o["topic_signals"])]
    moves = sorted(
        (r["person_id"], r["kind"], r.get("audience") or r.get("stage")) for r in records
    )
    assert moves == [
        ("A", "audience_enter", "buyers"),
        ("A", "audience_enter", "shoe_browsers"),
        ("A", "audience_exit", "shoe_browsers"),
        ("A", "lifecycle", "first_purchase"),
        ("A", "lifecycle", "identified"),
        ("B", "audience_enter", "buyers"),
        ("B", "audience_exit", "buyers"),
        ("B", "lifecycle", "first_purchase"),  # straight from anonymous: bought first
        ("C", "lifecycle", "first_purchase"),
    ]


def test_lookups_on_a_worker_that_has_written_nothing_are_404_not_500(
    overrides: dict, worker: Proc
) -> None:
    """faust's router partitions a key with the producer's metadata for the table's
    changelog, which a worker that has written nothing there has not fetched: that was a
    500 (a TypeError in the router) until the views fetch it first."""
    deadline = time.monotonic() + 60
    while True:
        statuses = {
            path: read(overrides, path)[0]
            for path in ("/signals/identifiers/cookie:nobody/", "/signals/profiles/nobody/")
        }
        assert 500 not in statuses.values(), (statuses, worker.tail())
        if set(statuses.values()) == {404} or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # 503 while the tables recover
    assert set(statuses.values()) == {404}, statuses


@pytest.mark.parametrize("key", [None, "wrong-key", "", "reader-key2"])
def test_read_api_refuses_missing_or_wrong_keys(overrides: dict, worker: Proc, key) -> None:
    for path in (
        "/signals/profiles/A/",
        "/signals/identifiers/cookie:c1/",
        "/signals/audiences/buyers/members/",
        "/signals/audiences/",
    ):
        status, body = read(overrides, path, key)
        assert status == 401 and body == {"error": "missing or wrong API key"}, path
    # faust's own table views would serve profiles without any key: they are off
    assert http_get(f"http://127.0.0.1:{overrides['worker_web_port']}/table/")[0] == 404
    status, body = read(overrides, "/signals/audiences/", KEY)
    assert status == 200 and [a["name"] for a in body["audiences"]] == ["shoe_browsers", "buyers"]


def test_an_erased_person_disappears_from_the_stage_and_its_tables(
    overrides: dict, tmp_path: Path
) -> None:
    o = overrides | {"admin_api_key": "admin-key"}
    produce(o, [("P", batch_message("P", A_EVENTS)), ("Q", batch_message("Q", B_EVENTS))])
    run_trackpipe(["migrate"], o)
    proc = start_trackpipe("worker", ["worker"], o, tmp_path / "logs")
    try:
        wait_http(proc, f"http://127.0.0.1:{o['worker_web_port']}/signals/stats/")
        wait_for(o, proc, messages=2)
        assert read(o, "/signals/profiles/P/")[0] == 200
        request = urllib.request.Request(
            f"http://127.0.0.1:{o['worker_web_port']}/erase/",
            data=orjson.dumps({"identifier": "user:u1"}),
            headers={"Authorization": "Bearer admin-key"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert "profiles" in orjson.loads(response.read())["tables"]
        assert read(o, "/signals/profiles/P/")[0] == 404
        assert read(o, "/signals/identifiers/cookie:c1/")[0] == 404
        assert read(o, "/signals/profiles/Q/")[0] == 200
        # P's next message drops its state and is not counted, nor written
        produce(o, [("P", batch_message("P", [event("a9", "page_view", 0, device_id="c1")]))])
        after = wait_for(o, proc, messages=3)
        assert after["erased"] == 1 and after["events_applied"] == 5  # unchanged
    finally:
        stop(proc, signal.SIGINT)
    assert query(o, "SELECT DISTINCT person_id FROM {db}.profiles") == [("Q",)]
    assert query(o, "SELECT DISTINCT person_id FROM {db}.interests") == [("Q",)]
    # acknowledged by hand after each insert, the three messages' offsets were committed
    admin = KafkaAdminClient(bootstrap_servers=o["kafka_bootstrap"])
    try:
        offsets = admin.list_group_offsets(o["app_id"])[o["app_id"]]
    finally:
        admin.close()
    committed = sum(
        meta.offset for tp, meta in offsets.items() if tp.topic == o["topic_attributed"]
    )
    assert committed == 3


def test_two_workers_route_each_lookup_to_the_owner(overrides: dict, tmp_path: Path) -> None:
    """Persons spread over two workers' partitions; either worker answers for every one of
    them (routed to the owner), by person_id and by identifier."""
    persons = [f"person-{i}" for i in range(24)]
    produce(
        overrides,
        [
            (p, batch_message(p, [event(f"{p}-e", "page_view", 1, device_id=f"dev-{p}")]))
            for p in persons
        ],
    )
    run_trackpipe(["migrate"], overrides)
    second = overrides | {"worker_web_port": free_port(), "worker_data_dir": tmp_path / "w2"}
    procs = [
        start_trackpipe(f"worker{i}", ["worker"], o, tmp_path / "logs")
        for i, o in enumerate((overrides, second))
    ]
    try:
        for proc, o in zip(procs, (overrides, second), strict=True):
            wait_http(proc, f"http://127.0.0.1:{o['worker_web_port']}/signals/stats/")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the group has both, and every answer is in
            status, body = http_get(
                f"http://127.0.0.1:{overrides['worker_web_port']}/router/signals-profiles/"
            )
            owners = (
                [h for h, t in orjson.loads(body).items() if any(t.values())]
                if status == 200
                else []
            )
            found = [read(overrides, f"/signals/profiles/{p}/")[0] for p in persons]
            if len(owners) == 2 and found == [200] * len(persons):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"owners {owners}, answers {found}:\n{procs[1].tail()}")
        for o in (overrides, second):
            for p in persons:
                status, body = read(o, f"/signals/profiles/{p}/")
                assert status == 200 and body["person_id"] == p, (o["worker_web_port"], p)
                status, body = read(o, f"/signals/identifiers/cookie:dev-{p}/")
                assert status == 200 and body["person_id"] == p
    finally:
        for proc in procs:
            stop(proc, signal.SIGINT)
