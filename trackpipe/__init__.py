"""trackpipe: streaming behavioural tracking (collector → Kafka → streams → ClickHouse)."""

__version__ = "0.1.0"
