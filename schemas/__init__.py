"""Message models (pydantic), the warehouse connection and ClickHouse migrations."""
