from __future__ import annotations

from schemas.migrations import MIGRATIONS, Features
from schemas.warehouse import connect, parse_version


def test_versions_are_unique_and_ascending() -> None:
    versions = [m.version for m in MIGRATIONS]
    assert versions == sorted(set(versions))


def test_old_servers_get_no_newer_features() -> None:
    old, new = Features((18, 16, 1)), Features((26, 9, 2))
    from schemas.migrations import Context

    for migration in MIGRATIONS:
        old_sql = " ".join(migration.build(Context(old, "db")))
        assert "LowCardinality" not in old_sql and " TTL " not in old_sql
    assert any("LowCardinality" in " ".join(m.build(Context(new, "db"))) for m in MIGRATIONS)


def test_parse_version() -> None:
    assert parse_version("18.16.1") == (18, 16, 1)
    assert parse_version("24.8.4.13") == (24, 8, 4)


def test_unknown_warehouse_scheme_is_refused() -> None:
    import pytest

    from schemas.warehouse import WarehouseError

    with pytest.raises(WarehouseError, match="postgres"):
        connect("postgres://x/y")


def test_cluster_ddl_is_replicated_and_distributed() -> None:
    from schemas.migrations import Context, views

    c = Context(Features((24, 8)), "tp", cluster="prod")
    sql = [" ".join(s.split()) for m in MIGRATIONS for s in m.build(c)] + views(c)
    events = next(s for s in sql if "CREATE TABLE IF NOT EXISTS tp.events " in s)
    assert "ON CLUSTER prod" in events
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tp/events', "
        "'{replica}', inserted_at)"
    ) in events
    assert any(
        "tp.events_all ON CLUSTER prod AS tp.events ENGINE = Distributed(prod, tp, events" in s
        for s in sql
    )
    assert all("ON CLUSTER prod" in s for s in sql if s.lstrip().startswith("CREATE"))


def test_single_server_ddl_has_no_cluster_parts() -> None:
    from schemas.migrations import Context

    c = Context(Features((18, 16, 1)), "tp")
    sql = " ".join(s for m in MIGRATIONS for s in m.build(c))
    assert "ON CLUSTER" not in sql and "Replicated" not in sql and "Distributed" not in sql
    assert "CODEC" not in sql


def test_funnel_steps_are_quoted_as_literals() -> None:
    from schemas.migrations import Context, views

    c = Context(Features((24, 8)), "tp", funnel_steps=("view", "it's"))
    assert "event_type = 'it\\'s'" in views(c)[1]
