"""Insertable columns of the tables the pipeline writes (MATERIALIZED ones are computed)."""

from __future__ import annotations

EVENTS_COLUMNS: list[tuple[str, str]] = [
    ("event_id", "String"),
    ("event_type", "String"),
    ("site_id", "String"),
    ("device_id", "String"),
    ("device_kind", "String"),
    ("user_id", "String"),
    ("email_hash", "String"),
    ("ts_ms", "UInt64"),
    ("received_ms", "UInt64"),
    ("url", "String"),
    ("referrer", "String"),
    ("category", "String"),
    ("product_id", "String"),
    ("revenue", "Float64"),
    ("currency", "String"),
    ("campaign", "String"),
    ("ip", "String"),
    ("user_agent", "String"),
    ("props", "String"),
    ("source", "String"),
    ("message_id", "String"),
    ("advertising_id", "String"),
    ("page_title", "String"),
    ("locale", "String"),
    ("timezone", "String"),
    ("channel", "String"),
    ("utm_source", "String"),
    ("utm_medium", "String"),
    ("utm_term", "String"),
    ("utm_content", "String"),
    ("device_type", "String"),
    ("os", "String"),
    ("browser", "String"),
    ("is_bot", "UInt8"),
    ("consent", "Array(String)"),
]

# Identity and sessions (streams/stitching.py); versions 20–29 in schemas/migrations.py.
# These are the inserted columns; each table also has DateTime columns computed by the
# server from the `*_ms` ones (DERIVED_DATETIMES), which spares the writer a conversion
# per row.
IDENTITIES_COLUMNS: list[tuple[str, str]] = [
    ("id_type", "String"),
    ("id_value", "String"),
    ("person_id", "String"),
    ("first_seen_ms", "UInt64"),
    ("last_seen_ms", "UInt64"),
    ("version", "UInt64"),
]

_SESSION_COMMON: list[tuple[str, str]] = [
    ("started_ms", "UInt64"),
    ("ended_ms", "UInt64"),
    ("events", "UInt32"),
    ("views", "UInt32"),
    ("devices", "Array(String)"),
    ("device_types", "Array(String)"),
    ("device_path", "Array(String)"),
    ("switches", "UInt32"),
    ("channel", "String"),
    ("source", "String"),
    ("entry_page", "String"),
    ("exit_page", "String"),
    ("converted", "UInt8"),
    ("revenue", "Float64"),
    ("is_final", "UInt8"),
    ("superseded_by", "String"),
    ("version", "UInt64"),
]

SESSIONS_COLUMNS: list[tuple[str, str]] = [
    ("session_id", "String"),
    ("person_id", "String"),
    *_SESSION_COMMON,
]

DEVICE_SESSIONS_COLUMNS: list[tuple[str, str]] = [
    ("session_id", "String"),
    ("device_id", "String"),
    *_SESSION_COMMON,
]

DERIVED_DATETIMES: dict[str, str] = {
    "first_seen": "first_seen_ms",
    "last_seen": "last_seen_ms",
    "started_at": "started_ms",
    "ended_at": "ended_ms",
}

# Signals and audiences (streams/signals.py); versions 30–39 in schemas/migrations.py.
# Parallel arrays stand in for maps: ClickHouse 18.16 has no Map type.
PROFILES_COLUMNS: list[tuple[str, str]] = [
    ("person_id", "String"),
    ("version", "UInt64"),
    ("merged_into", "String"),
    ("updated_at", "DateTime"),
    ("first_seen", "DateTime"),
    ("last_seen", "DateTime"),
    ("cookie_ids", "Array(String)"),
    ("app_ids", "Array(String)"),
    ("email_hashes", "Array(String)"),
    ("advertising_ids", "Array(String)"),
    ("user_ids", "Array(String)"),
    ("lifecycle", "String"),
    ("purchases", "UInt32"),
    ("revenue", "Float64"),
    ("last_purchase", "DateTime"),
    ("rfm_r", "UInt8"),
    ("rfm_f", "UInt8"),
    ("rfm_m", "UInt8"),
    ("channels", "Array(String)"),
    ("channel_shares", "Array(Float64)"),
    ("device_types", "Array(String)"),
    ("device_shares", "Array(Float64)"),
    ("email_actions", "Array(String)"),
    ("email_action_counts", "Array(UInt32)"),
    ("best_hour", "Int8"),
    ("timezone", "String"),
    ("contacts_7d", "UInt32"),
    ("consent", "Array(String)"),
    ("audience_eligible", "UInt8"),
    ("audiences", "Array(String)"),
]

INTERESTS_COLUMNS: list[tuple[str, str]] = [
    ("person_id", "String"),
    ("category", "String"),
    ("score", "Float64"),
    ("as_of", "DateTime"),
    ("version", "UInt64"),
]

AUDIENCE_MEMBERS_COLUMNS: list[tuple[str, str]] = [
    ("audience", "String"),
    ("person_id", "String"),
    ("cookie_ids", "Array(String)"),
    ("app_ids", "Array(String)"),
    ("email_hashes", "Array(String)"),
    ("advertising_ids", "Array(String)"),
    ("entered_at", "DateTime"),
    ("exited_at", "DateTime"),
    ("version", "UInt64"),
]

LIFECYCLE_MOMENTS_COLUMNS: list[tuple[str, str]] = [
    ("person_id", "String"),
    ("stage", "String"),
    ("previous", "String"),
    ("at", "DateTime"),
    ("at_ms", "UInt64"),
]
