from __future__ import annotations

import pytest

from trackpipe.settings import Settings


def test_environment_variables_are_prefixed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKPIPE_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("TRACKPIPE_COLLECTOR_PORT", "9999")
    monkeypatch.setenv("TRACKPIPE_WAREHOUSE_PASSWORD", "s3cret")
    s = Settings(_env_file=None)
    assert s.kafka_bootstrap == "k1:9092,k2:9092" and s.collector_port == 9999
    assert "s3cret" not in repr(s)


def test_settings_are_frozen() -> None:
    s = Settings(_env_file=None)
    with pytest.raises(ValueError):
        s.collector_port = 1  # type: ignore[misc]


def test_example_env_files_only_name_real_settings() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    fields = {name.upper() for name in Settings.model_fields}
    for example in (".env.example", ".env.full.example"):
        for line in (root / example).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key = line.split("=", 1)[0].strip()
                assert key.startswith("TRACKPIPE_"), line
                assert key.removeprefix("TRACKPIPE_") in fields, f"{example}: {key} is no setting"


def test_readme_documents_every_setting() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`TRACKPIPE_{name.upper()}`" in readme, name
