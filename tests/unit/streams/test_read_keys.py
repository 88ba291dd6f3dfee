"""Read API keys: several keys for rotation, either header, nothing empty or unset passes."""

from __future__ import annotations

from types import SimpleNamespace

from pydantic import SecretStr

from streams.signals_views import api_keys, read_authorized
from trackpipe.settings import Settings


def request(**headers: str) -> SimpleNamespace:
    return SimpleNamespace(headers=headers)


def test_keys_from_settings_and_headers() -> None:
    keys = api_keys(Settings(_env_file=None, read_api_keys=SecretStr(" old , new ,")))
    assert keys == [b"old", b"new"]
    assert read_authorized(keys, request(Authorization="Bearer new"))
    assert read_authorized(keys, request(**{"X-API-Key": "old"}))
    for bad in (
        request(),
        request(Authorization="Bearer "),
        request(Authorization="Bearer newer"),
        request(Authorization="new"),
        request(**{"X-API-Key": ""}),
    ):
        assert not read_authorized(keys, bad)


def test_no_keys_configured_refuses_everyone() -> None:
    keys = api_keys(Settings(_env_file=None))
    assert keys == [] and not read_authorized(keys, request(Authorization="Bearer x"))
    assert api_keys(Settings(_env_file=None, read_api_keys=SecretStr(" , "))) == []
