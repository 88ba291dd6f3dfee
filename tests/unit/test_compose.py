"""docker-compose.yml cannot run here (no Docker engine): check it parses and fits the CLI."""

from __future__ import annotations

from pathlib import Path

import yaml

from trackpipe.cli import build_parser
from trackpipe.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_compose_parses_and_runs_only_existing_commands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "clickhouse", "migrate", "collector", "worker"} <= set(services)
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    fields = {name.upper() for name in Settings.model_fields}
    for name in ("migrate", "collector", "worker"):
        command = services[name]["command"]
        assert command[0] == "trackpipe" and command[1] in subcommands, command
        for key in services[name].get("environment", {}):
            assert key.removeprefix("TRACKPIPE_") in fields, f"{name}: {key} is no setting"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    for name in ("kafka", "clickhouse", "collector"):
        assert "healthcheck" in services[name], name
