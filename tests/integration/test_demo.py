"""`make demo` end to end, as a user runs it: every stage on the embedded stack, and what
the demo reports is what the warehouse holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.warehouse import connect
from trackpipe.demo import run_demo

pytestmark = pytest.mark.integration


def test_the_demo_stitches_sessionizes_and_builds_audiences_with_consent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "demo"
    # 0: every accepted event is stored, both stages settled, and every applied event is in
    # exactly one person session and one device session (the demo checks these itself).
    assert run_demo(persons=60, workdir=str(work), seed=3) == 0
    out = capsys.readouterr().out
    assert "every session closed" in out and "each in exactly one" in out
    with connect(f"chdb://{(work / 'warehouse').resolve()}") as wh:
        db = wh.database
        [(identifiers, persons)] = wh.query(
            f"SELECT count(), uniqExact(person_id) FROM {db}.identities FINAL"
        )
        [(cross_device,)] = wh.query(
            f"SELECT countIf(length(devices) > 1) FROM {db}.sessions FINAL WHERE superseded_by = ''"
        )
        [(members, declined)] = wh.query(
            f"SELECT countIf(toUInt32(exited_at) = 0), "
            f"countIf(has(p.consent, 'marketing') = 0) "
            f"FROM {db}.audience_members AS m FINAL "
            f"ANY INNER JOIN (SELECT person_id, consent FROM {db}.profiles FINAL) AS p "
            f"USING (person_id)"
        )
        [(decliners,)] = wh.query(
            f"SELECT count() FROM {db}.profiles FINAL "
            f"WHERE merged_into = '' AND NOT has(consent, 'marketing')"
        )
    assert persons < identifiers  # identifiers were stitched together
    assert cross_device > 0  # sessions that follow a person from one device to another
    assert members > 0
    assert decliners > 0 and declined == 0  # those who declined marketing are in none
