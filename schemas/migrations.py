"""Versioned, forward-only ClickHouse migrations, and the views re-created on every run.

Each migration builds its statements for a `Context`: the connected server's features, the
database, and optionally a cluster. The same history therefore runs on Debian's ClickHouse
18.16 and on current ClickHouse (chdb): newer features (LowCardinality, TTL, codecs) are used
only where the server has them. Every statement is idempotent (`IF NOT EXISTS`), so a
migration interrupted half-way is safe to run again.

Versions 1–19: warehouse (events, dashboards); 20–29: identity and sessions; 30–39: signals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from schemas.tables import (
    DERIVED_DATETIMES,
    DEVICE_SESSIONS_COLUMNS,
    IDENTITIES_COLUMNS,
    SESSIONS_COLUMNS,
)


@dataclass(frozen=True)
class Features:
    version: tuple[int, ...]

    @property
    def low_cardinality(self) -> bool:
        # 18.16 has it only behind an experimental setting; on by default since 19.x.
        return self.version >= (19, 3)

    @property
    def ttl(self) -> bool:
        return self.version >= (19, 6)

    @property
    def codecs(self) -> bool:
        return self.version >= (19, 10)

    def lc(self, kind: str = "String") -> str:
        return f"LowCardinality({kind})" if self.low_cardinality else kind

    def describe(self) -> str:
        names = [n for n in ("low_cardinality", "ttl", "codecs") if getattr(self, n)]
        version = ".".join(map(str, self.version))
        return f"ClickHouse {version}; features: {', '.join(names) or 'none of the optional ones'}"


@dataclass(frozen=True)
class Context:
    features: Features
    db: str
    cluster: str = ""  # non-empty: replicated tables ON CLUSTER + Distributed `<table>_all`
    funnel_steps: tuple[str, ...] = field(default=("page_view", "add_to_cart", "purchase"))

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER {self.cluster}" if self.cluster else ""

    def engine(self, name: str, table: str, *args: str) -> str:
        """`name(args)`, or its Replicated form on a cluster (one ZooKeeper path per shard)."""
        if self.cluster:
            path = f"'/clickhouse/tables/{{shard}}/{self.db}/{table}'"
            replica = "'{replica}'"
            return f"Replicated{name}({', '.join([path, replica, *args])})"
        return f"{name}({', '.join(args)})"

    def distributed(self, table: str, sharding_key: str) -> list[str]:
        if not self.cluster:
            return []
        return [
            f"CREATE TABLE IF NOT EXISTS {self.db}.{table}_all{self.on_cluster} "
            f"AS {self.db}.{table} "
            f"ENGINE = Distributed({self.cluster}, {self.db}, {table}, {sharding_key})"
        ]

    def compressed(self, kind: str, codec: str) -> str:
        return f"{kind} CODEC({codec})" if self.features.codecs else kind


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    build: Callable[[Context], list[str]]


def _events(c: Context) -> list[str]:
    f = c.features
    # ReplacingMergeTree keyed on event_id: a batch redelivered after a crash collapses to one
    # row per event on merge; read with FINAL (or uniqExact(event_id)) for exact counts.
    # The sink streams the collector's JSON lines as they are (JSONEachRow, parsed by the
    # server); the DateTime columns are MATERIALIZED from the epoch-ms fields the events carry.
    return [
        f"""
        CREATE TABLE IF NOT EXISTS {c.db}.events{c.on_cluster} (
            event_id String,
            event_type {f.lc()},
            site_id {f.lc()},
            device_id String,
            device_kind {f.lc()},
            user_id String,
            email_hash String,
            ts_ms {c.compressed("UInt64", "Delta, ZSTD")},
            ts DateTime MATERIALIZED toDateTime(intDiv(ts_ms, 1000)),
            received_ms UInt64,
            received_at DateTime MATERIALIZED toDateTime(intDiv(received_ms, 1000)),
            url {c.compressed("String", "ZSTD")},
            referrer {c.compressed("String", "ZSTD")},
            category {f.lc()},
            product_id String,
            revenue Float64,
            currency {f.lc()},
            campaign String,
            ip String,
            user_agent {c.compressed("String", "ZSTD")},
            props {c.compressed("String", "ZSTD")},
            source {f.lc()},
            message_id String,
            advertising_id String,
            page_title String,
            locale {f.lc()},
            timezone {f.lc()},
            channel {f.lc()},
            utm_source String,
            utm_medium String,
            utm_term String,
            utm_content String,
            device_type {f.lc()},
            os {f.lc()},
            browser {f.lc()},
            is_bot UInt8,
            consent Array(String),
            inserted_at DateTime MATERIALIZED now()
        ) ENGINE = {c.engine("ReplacingMergeTree", "events", "inserted_at")}
        PARTITION BY toYYYYMM(ts)
        ORDER BY (site_id, toDate(ts), device_id, event_id)
        """,
        *c.distributed("events", "cityHash64(device_id)"),
    ]


# Before stitching, the best person key an event carries: user id, else e-mail, else device.
PERSON_KEY = (
    "if(user_id != '', concat('u:', user_id), "
    "if(email_hash != '', concat('e:', email_hash), concat('d:', device_id)))"
)


def _dashboards(c: Context) -> list[str]:
    agg = c.engine("AggregatingMergeTree", "daily_activity")
    agg_channel = c.engine("AggregatingMergeTree", "channel_mix_daily")
    # Humans only: bots are flagged at the collector and kept out of every dashboard.
    return [
        f"""
        CREATE TABLE IF NOT EXISTS {c.db}.daily_activity{c.on_cluster} (
            day Date,
            site_id String,
            events AggregateFunction(count),
            devices AggregateFunction(uniq, String),
            persons AggregateFunction(uniq, String)
        ) ENGINE = {agg} PARTITION BY toYYYYMM(day) ORDER BY (site_id, day)
        """,
        f"""
        CREATE MATERIALIZED VIEW IF NOT EXISTS {c.db}.daily_activity_mv{c.on_cluster}
        TO {c.db}.daily_activity AS
        SELECT toDate(ts) AS day, site_id, countState() AS events,
               uniqState(device_id) AS devices, uniqState({PERSON_KEY}) AS persons
        FROM {c.db}.events WHERE is_bot = 0 GROUP BY day, site_id
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {c.db}.channel_mix_daily{c.on_cluster} (
            day Date,
            site_id String,
            channel String,
            events AggregateFunction(count),
            devices AggregateFunction(uniq, String),
            revenue AggregateFunction(sum, Float64)
        ) ENGINE = {agg_channel} PARTITION BY toYYYYMM(day) ORDER BY (site_id, day, channel)
        """,
        f"""
        CREATE MATERIALIZED VIEW IF NOT EXISTS {c.db}.channel_mix_daily_mv{c.on_cluster}
        TO {c.db}.channel_mix_daily AS
        SELECT toDate(ts) AS day, site_id, channel, countState() AS events,
               uniqState(device_id) AS devices, sumState(revenue) AS revenue
        FROM {c.db}.events WHERE is_bot = 0 GROUP BY day, site_id, channel
        """,
    ]


def _erasures(c: Context) -> list[str]:
    # The audit of erasures: when, how many identifiers, which tables, who asked: never
    # the identifiers themselves.
    return [
        f"""
        CREATE TABLE IF NOT EXISTS {c.db}.erasures{c.on_cluster} (
            erasure_id String,
            requested_at DateTime,
            completed_at DateTime,
            identifiers UInt32,
            tables Array(String),
            requested_by String
        ) ENGINE = {c.engine("MergeTree", "erasures")} ORDER BY (requested_at, erasure_id)
        """
    ]


def _columns(f: Features, columns: list[tuple[str, str]], low: frozenset[str]) -> str:
    names = {n for n, _ in columns}
    cols = [f"{n} {f.lc() if n in low else kind}" for n, kind in columns]
    cols += [
        f"{n} DateTime DEFAULT toDateTime(intDiv({ms}, 1000))"
        for n, ms in DERIVED_DATETIMES.items()
        if ms in names
    ]
    return ",\n".join(cols)


# Identity and sessions (versions 20–29). One row per key after FINAL: ReplacingMergeTree
# keeps the highest `version` (the input offset that produced the row). No PARTITION BY on
# sessions: a merge can move a session's start into another month, and rows of one key in
# two partitions would never replace each other.
def _identities(c: Context) -> list[str]:
    cols = _columns(c.features, IDENTITIES_COLUMNS, frozenset({"id_type"}))
    return [
        f"CREATE TABLE IF NOT EXISTS {c.db}.identities{c.on_cluster} ({cols}) "
        f"ENGINE = {c.engine('ReplacingMergeTree', 'identities', 'version')} "
        "ORDER BY (id_type, id_value)"
    ]


def _sessions(c: Context) -> list[str]:
    cols = _columns(c.features, SESSIONS_COLUMNS, frozenset({"channel", "source"}))
    return [
        f"CREATE TABLE IF NOT EXISTS {c.db}.sessions{c.on_cluster} ({cols}) "
        f"ENGINE = {c.engine('ReplacingMergeTree', 'sessions', 'version')} ORDER BY session_id"
    ]


def _device_sessions(c: Context) -> list[str]:
    cols = _columns(c.features, DEVICE_SESSIONS_COLUMNS, frozenset({"channel", "source"}))
    return [
        f"CREATE TABLE IF NOT EXISTS {c.db}.device_sessions{c.on_cluster} ({cols}) "
        f"ENGINE = {c.engine('ReplacingMergeTree', 'device_sessions', 'version')} "
        "ORDER BY session_id"
    ]


MIGRATIONS: list[Migration] = [
    Migration(1, "events", _events),
    Migration(2, "dashboards", _dashboards),
    Migration(3, "erasures", _erasures),
    Migration(20, "identities", _identities),
    Migration(21, "sessions", _sessions),
    Migration(22, "device_sessions", _device_sessions),
]


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def views(c: Context) -> list[str]:
    """Plain views hold no data: they are dropped and re-created on every migrate, so a
    changed configuration (the funnel's steps) takes effect on the next run."""
    steps = ", ".join(f"event_type = {_quote(step)}" for step in c.funnel_steps)
    return [
        f"DROP TABLE IF EXISTS {c.db}.funnel_daily{c.on_cluster}",
        f"""
        CREATE VIEW {c.db}.funnel_daily{c.on_cluster} AS
        SELECT day, site_id, level, count() AS devices
        FROM (
            SELECT toDate(ts) AS day, site_id, device_id,
                   windowFunnel(86400)(ts, {steps}) AS level
            FROM {c.db}.events FINAL
            WHERE is_bot = 0
            GROUP BY day, site_id, device_id
        )
        GROUP BY day, site_id, level
        """,
    ]


# Signals and audiences (versions 30–39): latest state per key in ReplacingMergeTree(version);
# read with FINAL (docs/signals.md). No PARTITION BY: rows of one key must stay in one part
# family to replace each other.
def _signals_table(
    table: str, columns: list[tuple[str, str]], order_by: str, version: str = "version"
) -> Callable[[Context], list[str]]:
    low = {"lifecycle", "stage", "previous", "timezone", "audience"}

    def build(c: Context) -> list[str]:
        cols = ",\n            ".join(
            f"{name} {c.features.lc() if name in low else kind}" for name, kind in columns
        )
        engine = c.engine("ReplacingMergeTree", table, *([version] if version else []))
        return [
            f"""
        CREATE TABLE IF NOT EXISTS {c.db}.{table}{c.on_cluster} (
            {cols}
        ) ENGINE = {engine} ORDER BY ({order_by})
        """,
            *c.distributed(table, "cityHash64(person_id)"),
        ]

    return build


def _signals_migrations() -> list[Migration]:
    from schemas import tables as t

    return [
        Migration(30, "profiles", _signals_table("profiles", t.PROFILES_COLUMNS, "person_id")),
        Migration(
            31, "interests", _signals_table("interests", t.INTERESTS_COLUMNS, "person_id, category")
        ),
        Migration(
            32,
            "audience_members",
            _signals_table(
                "audience_members", t.AUDIENCE_MEMBERS_COLUMNS, "audience, person_id, entered_at"
            ),
        ),
        Migration(
            33,
            "lifecycle_moments",
            _signals_table(
                "lifecycle_moments", t.LIFECYCLE_MOMENTS_COLUMNS, "person_id, at_ms, stage", ""
            ),
        ),
    ]


MIGRATIONS.extend(_signals_migrations())
