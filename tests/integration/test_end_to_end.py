"""N good + M malformed pixels over HTTP → exactly N rows in the warehouse, M dead letters."""

from __future__ import annotations

import http.client
from pathlib import Path
from urllib.parse import urlencode

import orjson
import pytest

from collector.routes import PIXEL_GIF
from tests.integration.conftest import Stack
from trackpipe.kafka_admin import read_all
from trackpipe.processes import Pipeline

pytestmark = pytest.mark.integration

N_GOOD = 400
BAD_QUERIES = [
    "e=page_view",  # no site
    "s=shop&ts=yesterday",
    "s=shop&rev=-12",
    "s=shop&e=Not%20An%20Event",
    "s=shop&ts=1",  # a clock in 1970
    "s=" + "x" * 100,
    "s=shop&cur=euro&em=jane%40example.com",
]
M_BAD = len(BAD_QUERIES) * 5


def good_query(i: int) -> str:
    return urlencode(
        {
            "s": "shop",
            "e": ["page_view", "purchase"][i % 2],
            "u": f"https://shop/p/{i}",
            "rev": "9.5" if i % 2 else "0",
            "ts": 1_764_000_000_000 + i * 1000,
            "uid": f"user-{i % 17}" if i % 3 == 0 else "",
        }
    )


def send_all(port: int, queries: list[str]) -> list[bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    bodies = []
    for q in queries:
        conn.request("GET", f"/i?{q}")
        response = conn.getresponse()
        assert response.status == 200
        bodies.append(response.read())
    conn.close()
    return bodies


def test_pixels_land_exactly_once_and_bad_ones_are_dead_lettered(
    stack: Stack, tmp_path: Path
) -> None:
    goods = [good_query(i) for i in range(N_GOOD)]
    bads = BAD_QUERIES * 5
    mixed = [
        q for pair in zip(goods, bads + [""] * (N_GOOD - M_BAD), strict=True) for q in pair if q
    ]
    with Pipeline(stack.overrides, tmp_path / "logs") as pipeline:
        bodies = send_all(int(stack.overrides["collector_port"]), mixed)
        assert bodies == [PIXEL_GIF] * (N_GOOD + M_BAD)  # every pixel got its GIF
        assert pipeline.wait_rows_written(N_GOOD, timeout_s=60) == N_GOOD
        letters = read_all(stack.bootstrap, str(stack.overrides["topic_dead"]), idle_s=1.5)
    # The worker has stopped (and released chdb): read what is really stored.
    with stack.warehouse() as wh:
        urls = [r[0] for r in wh.query(f"SELECT url FROM {wh.database}.events")]
        [(count, distinct, revenue)] = wh.query(
            f"SELECT count(), uniqExact(event_id), sum(revenue) FROM {wh.database}.events"
        )
    assert sorted(urls) == sorted(f"https://shop/p/{i}" for i in range(N_GOOD))
    assert count == distinct == N_GOOD
    assert revenue == pytest.approx(9.5 * (N_GOOD // 2))
    assert len(letters) == M_BAD
    decoded = [orjson.loads(v) for _, v in letters]
    assert {d["reason"] for d in decoded} == {"invalid"}
    assert all("jane" not in d["raw"] for d in decoded)
