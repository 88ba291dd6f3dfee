"""Erasure (right to be forgotten): find every identifier linked to a person, delete their
rows from every warehouse table, record the erasure without personal data, and suppress
future collection for those identifiers.

Linked identifiers are the transitive closure over what appeared together on events (a
device and the user id that logged in on it, an e-mail hash clicked on a device, …), so
erasing by one identifier reaches every device of the person.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from collector.privacy import hash_email
from schemas.warehouse import Warehouse
from trackpipe.suppression import suppression_key

KINDS = ("device", "user", "email", "advertising")
# Identifier kind → its column in `events`.
COLUMNS = {
    "device": "device_id",
    "user": "user_id",
    "email": "email_hash",
    "advertising": "advertising_id",
}
MAX_ROUNDS = 20


class ErasureError(ValueError):
    """A request that cannot be carried out as given."""


@dataclass(frozen=True, order=True)
class Identifier:
    kind: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Identifier:
        """`email:jane@example.com`, `email_hash:<sha256>`, `user:u1`, `device:…`."""
        kind, sep, value = text.partition(":")
        value = value.strip()
        if not sep or not value:
            raise ErasureError(f"identifier must look like kind:value, got {text!r}")
        if kind == "email":
            return cls("email", hash_email(value))
        if kind == "email_hash":
            return cls("email", value.lower())
        if kind not in KINDS:
            raise ErasureError(f"unknown identifier kind {kind!r}; use one of {KINDS}")
        return cls(kind, value)

    @property
    def suppression_key(self) -> str:
        """What the suppression list stores: a hash, so the list itself holds no identifiers."""
        return suppression_key(self.kind, self.value)


@dataclass
class ErasureReport:
    erasure_id: str
    identifiers: list[Identifier]
    tables: list[str] = field(default_factory=list)
    persons: list[str] = field(default_factory=list)  # stitched person ids, when known


# The identity stage's identifier types → ours (see docs/streams.md).
STAGE_KINDS = {
    "cookie": "device",
    "app": "device",
    "adid": "advertising",
    "user": "user",
    "email": "email",
}


def linked_identifiers(
    warehouse: Warehouse, start: Identifier
) -> tuple[list[Identifier], list[str]]:
    """The closure of `start` over events and the identity stage's `identities`: every
    identifier linked to it, and the person ids they belong to."""
    found, persons = {start}, set()
    db = warehouse.database
    columns = ", ".join(COLUMNS.values())
    stitched = _has_table(warehouse, "identities")
    for _ in range(MAX_ROUNDS):
        params = _by_kind(found)
        rows = warehouse.query(
            f"SELECT DISTINCT {columns} FROM {db}.events WHERE {_match(params, COLUMNS)}", params
        )
        grown = found | {
            Identifier(kind, value)
            for row in rows
            for kind, value in zip(COLUMNS, row, strict=True)
            if value
        }
        if stitched:
            values = {"values": [i.value for i in grown]}
            persons |= {
                r[0]
                for r in warehouse.query(
                    f"SELECT DISTINCT person_id FROM {db}.identities "
                    "WHERE has(%(values)s, id_value)",
                    values,
                )
            }
            # An empty array parameter is Array(Nothing), which `has` refuses on 18.16.
            grown |= {
                Identifier(STAGE_KINDS[kind], value)
                for kind, value in (
                    warehouse.query(
                        f"SELECT DISTINCT id_type, id_value FROM {db}.identities "
                        "WHERE has(%(persons)s, person_id)",
                        {"persons": sorted(persons)},
                    )
                    if persons
                    else []
                )
                if kind in STAGE_KINDS
            }
        if grown == found:
            break
        found = grown
    return sorted(found), sorted(persons)


def _has_table(warehouse: Warehouse, table: str) -> bool:
    rows = warehouse.query(
        "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(t)s",
        {"db": warehouse.database, "t": table},
    )
    return rows[0][0] > 0


def _by_kind(identifiers: Iterable[Identifier]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for identifier in identifiers:
        params[identifier.kind].append(identifier.value)
    return params


def _match(params: dict[str, list[str]], columns: dict[str, str]) -> str:
    # Values travel as escaped array parameters, never spliced into the SQL text.
    return (
        " OR ".join(
            f"has(%({kind})s, {column})" for kind, column in columns.items() if params.get(kind)
        )
        or "0"
    )


# How each kind of column names a person, in any table that has it.
_PERSON_COLUMNS = {
    "device": "device_id",
    "user": "user_id",
    "email": "email_hash",
    "advertising": "advertising_id",
    "persons": "person_id",
    "values": "id_value",
}


def _row_filter(columns: set[str], params: dict[str, list[str]]) -> str:
    present = {k: c for k, c in _PERSON_COLUMNS.items() if c in columns}
    conditions = [_match(params, present)]
    if "devices" in columns and params["device"]:  # sessions list the devices they span
        conditions.append("hasAny(devices, %(device)s)")
    return " OR ".join(conditions)


def erase(warehouse: Warehouse, start: Identifier, requested_by: str = "cli") -> ErasureReport:
    identifiers, persons = linked_identifiers(warehouse, start)
    report = ErasureReport(uuid.uuid4().hex, identifiers, persons=persons)
    params: dict[str, list[str]] = _by_kind(identifiers) | {
        "persons": persons,
        "values": [i.value for i in identifiers],
    }
    db = warehouse.database
    started = int(time.time())
    for table, columns in _tables_with_people(warehouse).items():
        warehouse.execute(
            f"ALTER TABLE {db}.{table} DELETE WHERE {_row_filter(columns, params)}", params
        )
        report.tables.append(table)
    report.tables += _erase_signals(warehouse, params)
    _wait_for_mutations(warehouse, report.tables)
    warehouse.insert(
        "erasures",
        [
            ("erasure_id", "String"),
            ("requested_at", "DateTime"),
            ("completed_at", "DateTime"),
            ("identifiers", "UInt32"),
            ("tables", "Array(String)"),
            ("requested_by", "String"),
        ],
        [
            {
                "erasure_id": report.erasure_id,
                "requested_at": started,
                "completed_at": int(time.time()),
                "identifiers": len(identifiers),
                "tables": report.tables,
                "requested_by": requested_by,
            }
        ],
    )
    return report


def _tables_with_people(warehouse: Warehouse) -> dict[str, set[str]]:
    """Every table holding per-person rows (one with a column naming a person), with its
    columns. The dashboards' aggregate states hold no identifiers and stay."""
    rows = warehouse.query(
        "SELECT table, groupArray(name) FROM system.columns WHERE database = %(db)s "
        "AND table IN (SELECT name FROM system.tables WHERE database = %(db)s "
        "AND engine LIKE '%%MergeTree') GROUP BY table",
        {"db": warehouse.database},
    )
    naming = set(_PERSON_COLUMNS.values())
    return {t: set(cols) for t, cols in sorted(rows) if naming & set(cols)}


def _wait_for_mutations(warehouse: Warehouse, tables: list[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        [(pending,)] = warehouse.query(
            "SELECT count() FROM system.mutations WHERE database = %(db)s AND NOT is_done",
            {"db": warehouse.database},
        )
        if not pending:
            return
        time.sleep(0.2)
    raise ErasureError(f"deletes on {tables} still running after {timeout_s}s")


# The signals tables hold identifiers in arrays, one row per person (profiles, audience
# members) or per person and key (interests, moments): find the persons, delete by person_id.
SIGNALS_ARRAYS = {
    "device": ("cookie_ids", "app_ids"),
    "user": ("user_ids",),
    "email": ("email_hashes",),
    "advertising": ("advertising_ids",),
}
SIGNALS_TABLES = ("profiles", "interests", "audience_members", "lifecycle_moments")


def _erase_signals(warehouse: Warehouse, params: dict[str, list[str]]) -> list[str]:
    db = warehouse.database
    present = {
        r[0]
        for r in warehouse.query(
            "SELECT name FROM system.tables WHERE database = %(db)s", {"db": db}
        )
    }
    if "profiles" not in present:
        return []
    match = " OR ".join(
        f"hasAny({column}, %({kind})s)"
        for kind, columns in SIGNALS_ARRAYS.items()
        if params[kind]
        for column in columns
    )
    persons = [
        r[0]
        for r in warehouse.query(
            f"SELECT DISTINCT person_id FROM {db}.profiles WHERE {match}", params
        )
    ]
    if not persons:
        return []
    tables = [t for t in SIGNALS_TABLES if t in present]
    for table in tables:
        warehouse.execute(
            f"ALTER TABLE {db}.{table} DELETE WHERE has(%(persons)s, person_id)",
            {"persons": persons},
        )
    return tables
