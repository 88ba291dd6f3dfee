"""Audiences: declared in a TOML file, compiled once at start-up, evaluated per person.

    [audience.shoe_browsers]
    description = "looked at shoes a lot this week, bought nothing"
    rule = 'count(type="page_view", category="shoes", days=7) >= 3 and purchases == 0'

A file with any bad audience is rejected as a whole, with the file, the audience and the
position in its rule: a worker never starts with half of its audiences.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from streams.profiles import Profile, SignalsConfig, consents
from streams.rules import Compiled, RuleError, compile_rule

MAX_AUDIENCES = 200
MAX_FILE_BYTES = 256 * 1024
NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
KEYS = {"rule", "description"}


class AudienceFileError(ValueError):
    """The audience file cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Audience:
    name: str
    rule: str
    description: str
    matches: Compiled


def parse_audiences(text: str, cfg: SignalsConfig, source: str = "audiences") -> list[Audience]:
    if len(text.encode()) > MAX_FILE_BYTES:
        raise AudienceFileError(f"{source}: larger than {MAX_FILE_BYTES} bytes")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AudienceFileError(f"{source}: not valid TOML: {exc}") from exc
    unknown = set(data) - {"audience"}
    if unknown:
        raise AudienceFileError(f"{source}: unknown top-level keys {sorted(unknown)}")
    declared = data.get("audience", {})
    if not isinstance(declared, dict):
        raise AudienceFileError(f"{source}: 'audience' must be a table of [audience.<name>]")
    if len(declared) > MAX_AUDIENCES:
        raise AudienceFileError(f"{source}: more than {MAX_AUDIENCES} audiences")
    audiences = []
    for name, spec in declared.items():
        where = f"{source}: audience {name!r}"
        if not NAME.match(name):
            raise AudienceFileError(f"{where}: names are [a-z][a-z0-9_]{{0,63}}")
        if not isinstance(spec, dict) or not isinstance(spec.get("rule"), str):
            raise AudienceFileError(f'{where}: needs rule = "..."')
        if set(spec) - KEYS:
            raise AudienceFileError(f"{where}: unknown keys {sorted(set(spec) - KEYS)}")
        description = spec.get("description", "")
        if not isinstance(description, str):
            raise AudienceFileError(f"{where}: description must be a string")
        try:
            matches = compile_rule(spec["rule"], cfg)
        except RuleError as exc:
            raise AudienceFileError(f"{where}: rule {exc}") from exc
        audiences.append(Audience(name, spec["rule"], description, matches))
    return audiences


def load_audiences(path: Path | None, cfg: SignalsConfig) -> list[Audience]:
    if path is None or str(path) == "":
        return []
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise AudienceFileError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AudienceFileError(f"{path}: cannot read: {exc}") from exc
    return parse_audiences(text, cfg, str(path))


def memberships(p: Profile, now_ms: int, audiences: list[Audience], cfg: SignalsConfig) -> set[str]:
    """The audiences this person belongs to now: none at all without consent."""
    if not consents(p, cfg):
        return set()
    return {a.name for a in audiences if a.matches(p, now_ms)}


@dataclass(frozen=True)
class Change:
    audience: str
    entered: bool
    entered_at_ms: int
    at_ms: int


def reconcile(
    p: Profile, now_ms: int, audiences: list[Audience], cfg: SignalsConfig
) -> list[Change]:
    """Update `p["aud"]` to the person's current audiences; the enters and exits."""
    current = memberships(p, now_ms, audiences, cfg)
    changes = []
    for name in sorted(set(p["aud"]) - current):
        changes.append(Change(name, False, p["aud"].pop(name), now_ms))
    for name in sorted(current - set(p["aud"])):
        p["aud"][name] = now_ms
        changes.append(Change(name, True, now_ms, now_ms))
    return changes


def leave_all(p: Profile, now_ms: int) -> list[Change]:
    """Exits from every audience (a person merged away)."""
    changes = [Change(n, False, at, now_ms) for n, at in sorted(p["aud"].items())]
    p["aud"] = {}
    return changes
