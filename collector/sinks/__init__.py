"""Where accepted events and dead letters go: Kafka in production, memory in unit tests."""
