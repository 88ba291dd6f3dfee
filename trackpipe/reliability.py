"""The published reliability figures: fault tests record their outcome, one command writes
the table in docs/reliability.md.

Tests append JSON lines to `.reliability/results.jsonl` (or $TRACKPIPE_RELIABILITY_FILE);
`trackpipe reliability` turns the latest result of each test into the table.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def results_file() -> Path:
    return Path(
        os.environ.get("TRACKPIPE_RELIABILITY_FILE", ROOT / ".reliability" / "results.jsonl")
    )


def record(test: str, load: str, seconds: float, lost: int, doubled: int, notes: str) -> None:
    path = results_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {
        "test": test,
        "load": load,
        "seconds": round(seconds, 1),
        "lost": lost,
        "doubled": doubled,
        "notes": notes,
        "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    with path.open("ab") as f:
        f.write(orjson.dumps(line) + b"\n")


def table() -> str:
    latest: dict[str, dict] = {}
    path = results_file()
    if path.exists():
        for raw in path.read_bytes().splitlines():
            result = orjson.loads(raw)
            latest[result["test"]] = result
    rows = [
        "| Fault | Load | Duration | Lost | Doubled | Notes | Run |",
        "|---|---|---|---|---|---|---|",
    ]
    rows += [
        f"| {r['test']} | {r['load']} | {r['seconds']} s | {r['lost']} | {r['doubled']} | "
        f"{r['notes']} | {r['at']} |"
        for r in latest.values()
    ]
    return "\n".join(rows)


def regenerate(check_only: bool = False) -> str:
    text = DOC.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    updated = f"{head}{BEGIN}\n{table()}\n{END}{tail}"
    if not check_only:
        DOC.write_text(updated)
    verb = "checked" if check_only else "wrote"
    return f"{verb} docs/reliability.md ({len(table().splitlines()) - 2} results)"
