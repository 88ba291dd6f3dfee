"""Apply pending migrations and record them in `schema_migrations`; retention."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from schemas.migrations import MIGRATIONS, Context, Features, Migration, views
from schemas.warehouse import Warehouse


@dataclass(frozen=True)
class Step:
    migration: Migration
    statements: list[str]


def features(warehouse: Warehouse) -> Features:
    return Features(warehouse.version())


def context(
    warehouse: Warehouse, cluster: str = "", funnel_steps: tuple[str, ...] | None = None
) -> Context:
    extra = {"funnel_steps": funnel_steps} if funnel_steps else {}
    return Context(features(warehouse), warehouse.database, cluster, **extra)


def _ensure_bookkeeping(warehouse: Warehouse, c: Context) -> None:
    warehouse.execute(f"CREATE DATABASE IF NOT EXISTS {c.db}{c.on_cluster}")
    warehouse.execute(
        f"CREATE TABLE IF NOT EXISTS {c.db}.schema_migrations{c.on_cluster} "
        "(version UInt32, name String, applied_at DateTime, server_version String) "
        f"ENGINE = {c.engine('ReplacingMergeTree', 'schema_migrations')} ORDER BY version"
    )


def applied_versions(warehouse: Warehouse) -> set[int]:
    rows = warehouse.query(f"SELECT DISTINCT version FROM {warehouse.database}.schema_migrations")
    return {int(r[0]) for r in rows}


def plan(warehouse: Warehouse, c: Context) -> list[Step]:
    _ensure_bookkeeping(warehouse, c)
    done = applied_versions(warehouse)
    return [Step(m, m.build(c)) for m in MIGRATIONS if m.version not in done]


def migrate(warehouse: Warehouse, c: Context | None = None) -> list[Step]:
    c = c or context(warehouse)
    steps = plan(warehouse, c)
    server = ".".join(map(str, c.features.version))
    for step in steps:
        for statement in step.statements:
            warehouse.execute(statement)
        warehouse.insert(
            "schema_migrations",
            [
                ("version", "UInt32"),
                ("name", "String"),
                ("applied_at", "DateTime"),
                ("server_version", "String"),
            ],
            [
                {
                    "version": step.migration.version,
                    "name": step.migration.name,
                    "applied_at": int(time.time()),
                    "server_version": server,
                }
            ],
        )
    for statement in views(c):
        warehouse.execute(statement)
    return steps


def apply_retention(warehouse: Warehouse, days: int, c: Context) -> list[str]:
    """Keep `days` of events: a TTL where the server has it, else drop whole old months."""
    db = warehouse.database
    if c.features.ttl:
        statement = f"ALTER TABLE {db}.events{c.on_cluster} MODIFY TTL ts + INTERVAL {days} DAY"
        warehouse.execute(statement)
        return [statement]
    cutoff = (datetime.now(UTC) - timedelta(days=days)).date()
    # A month partition goes only when its newest row is older than the cutoff. Read from the
    # data: system.parts' min/max_date are not filled for custom partition keys on 18.16.
    rows = warehouse.query(
        f"SELECT toYYYYMM(ts) AS month, max(toDate(ts)) FROM {db}.events GROUP BY month"
    )
    done = []
    for partition, newest in rows:
        if date.fromisoformat(str(newest)) < cutoff:
            statement = f"ALTER TABLE {db}.events{c.on_cluster} DROP PARTITION {partition}"
            warehouse.execute(statement)
            done.append(statement)
    return done
