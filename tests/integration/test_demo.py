"""`make demo` end to end, as a user runs it: every stage on the embedded stack, and what
the demo reports is what the warehouse holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.tables import DEVICE_SESSIONS_COLUMNS, SESSIONS_COLUMNS
from schemas.warehouse import Warehouse, connect
from tests.streams_reference import from_rows, reference
from trackpipe.demo import demo_overrides, run_demo
from trackpipe.settings import Settings

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
        stitched = stitched_as_the_reference_would(wh, demo_overrides(work, 0))
    assert stitched["identifiers"] == identifiers and stitched["persons"] == persons
    assert persons < identifiers  # identifiers were stitched together
    assert cross_device > 0  # sessions that follow a person from one device to another
    assert members > 0
    assert decliners > 0 and declined == 0  # those who declined marketing are in none


EVENT_FIELDS = ("event_id", "ts_ms", "device_id", "device_kind", "user_id", "email_hash",
                "advertising_id", "revenue")  # fmt: skip


def stitched_as_the_reference_would(wh: Warehouse, overrides: dict[str, object]) -> dict:
    """The identities and sessions the demo wrote equal the offline reference over the
    events the demo stored (tests/streams_reference.py): every identifier's person, every
    person session and every device session. Returns what was compared, counted."""
    settings = Settings(_env_file=None, **overrides)  # type: ignore[arg-type]
    db = wh.database
    events = [
        dict(zip(EVENT_FIELDS, row, strict=True))
        for row in wh.query(f"SELECT {', '.join(EVENT_FIELDS)} FROM {db}.events WHERE is_bot = 0")
    ]
    events.sort(key=lambda e: (e["ts_ms"], e["event_id"]))
    ids, sessions, device_sessions = reference(
        events, int(settings.session_gap_s * 1000), settings.identity_limits
    )
    got_ids = {f"{t}:{v}": p for t, v, p in wh.query(
        f"SELECT id_type, id_value, person_id FROM {db}.identities FINAL")}  # fmt: skip
    assert got_ids == {k: v[0] for k, v in ids.items()}
    for table, columns, owner, want in (
        ("sessions", SESSIONS_COLUMNS, "person_id", sessions),
        ("device_sessions", DEVICE_SESSIONS_COLUMNS, "device_id", device_sessions),
    ):
        names = [n for n, _ in columns]
        rows = wh.query(f"SELECT {', '.join(names)} FROM {db}.{table} FINAL")
        assert from_rows([dict(zip(names, r, strict=True)) for r in rows], owner) == want
    return {"identifiers": len(got_ids), "persons": len(set(got_ids.values()))}
