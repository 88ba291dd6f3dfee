"""Erasure reaches every store, is audited without personal data, and suppresses collection."""

from __future__ import annotations

import http.client
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import orjson
import pytest

from collector.privacy import hash_email
from tests.integration.conftest import Stack
from trackpipe.demo import metric_total
from trackpipe.processes import Pipeline, http_get, run_trackpipe

pytestmark = pytest.mark.integration

KEY = "test-admin-key"
P_EMAIL = "Pat.Doe@Example.com"


def pixel(port: int, params: dict[str, str], cookie: str = "") -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "GET",
        "/i?" + urlencode({"s": "shop", **params}),
        headers={"Cookie": cookie} if cookie else {},
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    return (response.getheader("Set-Cookie") or "").split(";")[0]


def erase_over_http(pipeline: Pipeline, identifier: str, key: str | None) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{pipeline.worker_url}/erase/",
        method="POST",
        data=orjson.dumps({"identifier": identifier}),
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {key}"} if key else {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def send_people(port: int) -> tuple[str, str]:
    """Person P on three devices (linked by login and e-mail), person Q on one."""
    a = pixel(port, {"e": "page_view", "u": "https://shop/a1"})
    pixel(port, {"e": "login", "uid": "u-p"}, cookie=a)
    pixel(port, {"e": "screen_view", "did": "app-p", "uid": "u-p", "em": P_EMAIL})
    c = pixel(port, {"e": "email_click", "em": P_EMAIL, "cmp": "winter"})
    d = pixel(port, {"e": "login", "uid": "u-q"})
    pixel(port, {"e": "purchase", "uid": "u-q", "rev": "20"}, cookie=d)
    return a, c


P_WHERE = "device_id IN ({devices}) OR user_id = 'u-p' OR email_hash = '{hash}'"


def test_erasure_reaches_every_store_and_suppresses_collection(
    stack: Stack, tmp_path: Path
) -> None:
    o = stack.overrides | {"admin_api_key": KEY}
    with Pipeline(o, tmp_path / "logs") as pipeline:
        port = int(o["collector_port"])
        a, c = send_people(port)
        assert pipeline.wait_rows_written(6) == 6
        assert erase_over_http(pipeline, "email:x@y.z", None)[0] == 401
        assert erase_over_http(pipeline, "email:x@y.z", "wrong")[0] == 401
        assert erase_over_http(pipeline, "nonsense", KEY)[0] == 400
        status, report = erase_over_http(pipeline, f"email:{P_EMAIL.upper()}", KEY)
        assert status == 200, report
        # device A, device C, app-p, u-p and the e-mail hash: found through the links.
        assert report["identifiers"] == 5 and "events" in report["tables"]

        # New beacons from P's devices are refused at the collector once it has the list.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            pixel(port, {"e": "page_view", "u": "https://shop/after"}, cookie=a)
            metrics = http_get(f"{pipeline.collector_url}/metrics")[1]
            if metric_total(metrics, "events_suppressed_total") >= 1:
                break
            time.sleep(0.3)
        else:
            pytest.fail("the collector never suppressed the erased device")
        pixel(port, {"e": "page_view", "uid": "u-q"}, cookie=pixel(port, {"uid": "u-q"}))
        assert pipeline.wait_rows_written(8) >= 8  # Q's two new events arrive
    devices = ", ".join(f"'{x.split('=')[1]}'" for x in (a, c)) + ", 'app-p'"
    where = P_WHERE.format(devices=devices, hash=hash_email(P_EMAIL))
    with stack.warehouse() as wh:
        db = wh.database
        assert wh.query(f"SELECT count() FROM {db}.events WHERE {where}") == [(0,)]
        assert wh.query(f"SELECT count() FROM {db}.events WHERE user_id = 'u-q'")[0][0] >= 3
        [audit] = wh.query(f"SELECT identifiers, tables, requested_by, * FROM {db}.erasures")
        assert audit[0] == 5 and audit[2] == "http"
        text = repr(audit)
        assert "u-p" not in text and hash_email(P_EMAIL) not in text and "app-p" not in text


def test_cli_erasure_on_the_server(
    kafka_bootstrap: str, clickhouse_db: str, uid: str, tmp_path: Path
) -> None:
    from tests.integration.conftest import _overrides

    o = _overrides(uid, kafka_bootstrap, clickhouse_db, tmp_path)
    with Pipeline(o, tmp_path / "logs") as pipeline:
        send_people(int(o["collector_port"]))
        assert pipeline.wait_rows_written(6) == 6
        out = run_trackpipe(["erase", "user:u-q"], o)
    assert "2 linked identifiers" in out
    with Stack("cli", o).warehouse() as wh:
        assert wh.query(f"SELECT count() FROM {wh.database}.events WHERE user_id = 'u-q'") == [(0,)]
        assert wh.query(f"SELECT count() FROM {wh.database}.events")[0][0] == 4
