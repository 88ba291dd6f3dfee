from __future__ import annotations

from pathlib import Path

import pytest

from trackpipe import reliability


def test_the_table_shows_the_latest_result_of_each_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKPIPE_RELIABILITY_FILE", str(tmp_path / "r.jsonl"))
    reliability.record("kill worker", "100 beacons", 3.21, 5, 0, "first try")
    reliability.record("kill worker", "100 beacons", 2.0, 0, 0, "fixed")
    reliability.record("stop clickhouse", "50 beacons", 70.0, 0, 1, "hm")
    rows = reliability.table().splitlines()
    assert len(rows) == 4
    assert rows[2].startswith("| kill worker | 100 beacons | 2.0 s | 0 | 0 | fixed |")
    assert rows[3].startswith("| stop clickhouse | 50 beacons | 70.0 s | 0 | 1 | hm |")


def test_regenerate_only_replaces_the_marked_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "reliability.md"
    doc.write_text(f"intro\n{reliability.BEGIN}\nold\n{reliability.END}\noutro\n")
    monkeypatch.setattr(reliability, "DOC", doc)
    monkeypatch.setenv("TRACKPIPE_RELIABILITY_FILE", str(tmp_path / "none.jsonl"))
    reliability.regenerate()
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "| Fault | Load |" in text
