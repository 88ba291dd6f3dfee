from __future__ import annotations

import pytest

from collector.metrics import Metrics
from collector.routes import Routes
from collector.server import build_routes
from collector.sinks.memory import MemorySink
from trackpipe.settings import Settings


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None)


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def routes(settings: Settings, sink: MemorySink, metrics: Metrics) -> Routes:
    return build_routes(settings, sink, metrics)
