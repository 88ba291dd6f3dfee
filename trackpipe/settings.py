"""One typed settings object, read once at start-up from `TRACKPIPE_*` variables or `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.signals import INTEREST_WEIGHTS
from schemas.warehouse import Warehouse, connect


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRACKPIPE_", env_file=".env", extra="ignore", frozen=True
    )

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_idempotence: bool = Field(
        True, description="acks=all + idempotent producer; the embedded broker lacks it"
    )
    kafka_session_timeout_s: float = Field(
        30.0, description="consumer group session timeout; short in demo mode"
    )
    topic_raw: str = "trackpipe.events.raw"
    topic_dead: str = "trackpipe.events.dead"
    topic_suppressions: str = Field(
        "trackpipe.suppressions", description="hashed identifiers of erased persons (compacted)"
    )
    topic_partitions: int = 4
    topic_replication: int = 1

    # Collector
    collector_host: str = "127.0.0.1"
    collector_port: int = 8080
    cookie_name: str = "tp_vid"
    cookie_domain: str = ""
    cookie_max_age_s: int = 60 * 60 * 24 * 390
    cookie_secure: bool = False
    cookie_samesite: Literal["Lax", "Strict", "None"] = "Lax"
    anonymize_ip: bool = True
    trust_forwarded_for: bool = False
    max_body_bytes: int = Field(512 * 1024, description="hard limit: 413 before parsing")
    max_url_bytes: int = 8 * 1024
    dead_letter_raw_bytes: int = 2048

    # Collector: endpoints, consent, enrichment
    topic_bots: str = Field(
        "trackpipe.events.bots", description="events flagged as bots, kept apart from humans"
    )
    soft_body_bytes: int = Field(
        500_000, description="soft limit: larger bodies are dead-lettered (reason too_large)"
    )
    max_event_bytes: int = Field(
        32 * 1024, description="one JSON event at most; larger items are dead-lettered"
    )
    max_batch_events: int = Field(500, description="events per /collect or /v1/batch call")
    cors_origins: list[str] = Field(
        default_factory=list, description='origins allowed to call /collect, JSON: ["https://a"]'
    )
    segment_write_keys: dict[str, SecretStr] = Field(
        default_factory=dict, description='Segment write keys by site id, JSON: {"shop": "wk"}'
    )
    email_link_key: SecretStr | None = Field(
        None, description="HMAC key signing e-mail open pixels and click redirects"
    )
    public_url: str = Field(
        "http://127.0.0.1:8080", description="the collector's public base URL, for signed links"
    )
    optout_cookie_name: str = "tp_optout"
    consent_default: list[str] = Field(
        default_factory=lambda: ["analytics"],
        description="categories assumed when a beacon says nothing about consent",
    )
    consent_required: str = Field(
        "analytics", description="category an event needs to be stored with identifiers"
    )
    consent_missing: Literal["drop", "anonymize"] = Field(
        "anonymize", description="what happens to events without the required category"
    )
    gpc_policy: Literal["ignore", "no_advertising", "opt_out"] = "no_advertising"
    dnt_policy: Literal["ignore", "no_advertising", "opt_out"] = "no_advertising"
    # Collector: delivery
    collector_producer: Literal["confluent", "kafka-python"] = Field(
        "confluent", description="Kafka client of the collector; confluent is ~20x faster"
    )
    collector_processes: int = Field(
        1, ge=1, description="collector processes sharing the port (SO_REUSEPORT)"
    )
    collector_delivery_timeout_s: float = Field(
        10.0, ge=2.0, description="a record not acknowledged by Kafka by then is spooled"
    )
    collector_stats_interval_s: float = Field(
        5.0, ge=0.1, description="how often the confluent producer refreshes produce latency"
    )
    collector_spool_dir: Path = Field(
        Path(".trackpipe-spool"), description="on-disk spool; one subdirectory per process"
    )
    collector_spool_max_bytes: int = Field(
        1 << 30, ge=1 << 16, description="spool bound per process; beyond it records are refused"
    )
    collector_spool_segment_bytes: int = Field(16 << 20, ge=1 << 12)
    collector_spool_fsync_s: float = Field(
        1.0, ge=0, description="fsync the spool this often; 0 = after every append"
    )
    collector_shutdown_timeout_s: float = Field(
        30.0, description="how long SIGTERM may take to flush what is in flight"
    )

    # Streams (faust workers)
    app_id: str = "trackpipe"
    worker_web_host: str = "127.0.0.1"
    worker_web_port: int = 6066
    worker_data_dir: Path = Path(".trackpipe-worker")
    worker_fetch_bytes: int = Field(
        16 << 20,
        ge=1 << 20,
        description="most bytes one fetch takes from a partition (faust's default is 1 MiB)",
    )
    sink_batch_size: int = 5000
    sink_batch_seconds: float = 0.5
    sink_failpoint: str = Field(
        "", description="testing only: 'exit-after-insert' exits before committing offsets"
    )

    # Streams: identity and sessions
    identity_enabled: bool = Field(
        True, description="run the identity + sessions stage (ClickHouse server or chdb)"
    )
    topic_identity_in: str = Field("", description="batches for the stage; default <raw>.identity")
    topic_identity_changes: str = Field("", description="default <raw>.identity-changes")
    topic_late: str = Field("", description="events beyond the allowed lateness; <raw>.late")
    session_gap_s: float = 30 * 60
    allowed_lateness_s: float = 10 * 60
    identity_idle_s: float = Field(
        5 * 60,
        description="a raw partition read to its end and quiet this long stops holding the "
        "watermark back: its event time is taken as now minus this",
    )
    identity_limits: dict[str, int] = Field(
        default_factory=lambda: {"user": 1, "email": 3, "app": 5, "adid": 5, "cookie": 20}
    )
    identity_priority: list[str] = Field(
        default_factory=lambda: ["user", "email", "app", "adid", "cookie"]
    )
    identity_blocklist: list[str] = Field(default_factory=list)
    identity_batch_size: int = 500
    identity_flush_seconds: float = 1.0

    # Signals and audiences
    signals_enabled: bool = Field(
        True, description="run the signals stage (profiles, audiences, read API)"
    )
    topic_attributed: str = Field(
        "trackpipe.events.attributed",
        description="person-attributed event batches and merges, keyed by person_id",
    )
    topic_signals: str = Field(
        "trackpipe.signals", description="audience enter/exit and lifecycle moments"
    )
    signals_half_life_days: float = Field(14.0, gt=0, description="interest half-life")
    signals_weights: dict[str, float] = Field(
        default_factory=lambda: dict(INTEREST_WEIGHTS),
        description="interest weight per event type (JSON); other types add no interest",
    )
    signals_top_n: int = Field(10, ge=1, le=100, description="interests kept per person")
    signals_window_days: int = Field(
        30, ge=1, le=400, description="daily counts kept: the longest window a rule may use"
    )
    signals_dedup_ids: int = Field(
        1000, ge=10, description="newest event ids remembered per person for de-duplication"
    )
    signals_repeat_purchases: int = Field(2, ge=2, description="purchases of a repeat buyer")
    signals_lapsed_days: int = Field(90, ge=1, description="days without purchase: lapsed")
    signals_contact_events: list[str] = Field(
        default_factory=lambda: ["email_sent", "ad_shown"],
        description="event types that are marketing contacts (contact pressure)",
    )
    signals_optout_events: list[str] = Field(
        default_factory=lambda: ["opt_out", "unsubscribe", "consent_withdrawn"],
        description="event types that withdraw consent",
    )
    signals_required_consent: str = Field(
        "marketing", description="consent category needed to be in any audience; empty: none"
    )
    signals_categories_file: Path | None = Field(
        None, description="TOML file of URL pattern → category mappings"
    )
    signals_audiences_file: Path | None = Field(None, description="TOML file of audiences")
    signals_flush_seconds: float = Field(
        1.0, gt=0, description="longest wait before profile rows are written to the warehouse"
    )
    read_api_keys: SecretStr | None = Field(
        None, description="comma-separated keys of the read API; unset: every request gets 401"
    )

    # Warehouse: clickhouse://[user[:password]@]host:port/db or chdb:///path/to/dir
    warehouse_url: str = "clickhouse://127.0.0.1:9000/trackpipe"
    warehouse_password: SecretStr | None = None
    warehouse_cluster: str = Field(
        "", description="ClickHouse cluster name: replicated tables ON CLUSTER + Distributed"
    )
    retention_days: int = Field(0, ge=0, description="days of events to keep; 0 keeps all")
    funnel_steps: str = Field(
        "page_view,add_to_cart,purchase",
        pattern=r"^[a-z][a-z0-9_]{0,63}(,[a-z][a-z0-9_]{0,63})*$",
        description="event types of the funnel_daily view, in order",
    )

    admin_api_key: SecretStr | None = Field(
        None, description="key for the worker's admin endpoints (erasure); unset disables them"
    )

    log_level: str = "info"

    @property
    def funnel(self) -> tuple[str, ...]:
        return tuple(self.funnel_steps.split(","))

    def identity_topic(self, name: str) -> str:
        """A stage topic's name: as configured, or derived from the raw topic's."""
        configured = getattr(self, f"topic_{name.replace('-', '_')}")
        return configured or f"{self.topic_raw}.{name}"

    def open_warehouse(self) -> Warehouse:
        password = self.warehouse_password.get_secret_value() if self.warehouse_password else None
        return connect(self.warehouse_url, password)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
