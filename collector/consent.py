"""Consent at the edge: what may be stored about an event, decided before it is built.

The decision combines, in order: the browser's opt-out cookie, the categories the beacon
grants (or the configured default when it says nothing), Global Privacy Control and
Do-Not-Track as the configured policy says, and the category every stored event needs.
docs/collector.md "Consent" is the user-facing description of these rules.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from trackpipe.settings import Settings

Action = Literal["keep", "anonymize", "drop"]
ADVERTISING = "advertising"


class Signals(NamedTuple):
    """What the request says about privacy, independent of its payload.

    A named tuple, not a frozen dataclass: one is built for every request and hashed as a
    key of the decision cache, and a dataclass does both in Python code.
    """

    opted_out: bool = False  # our opt-out cookie
    gpc: bool = False  # Sec-GPC: 1
    dnt: bool = False  # DNT: 1


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    categories: tuple[str, ...]  # what the event carries as granted
    reason: str = ""  # why it is not kept as is

    @property
    def advertising(self) -> bool:
        return ADVERTISING in self.categories


# The eight possible signals, built once (a named tuple's constructor is Python code) and
# found by their plain tuple of values.
_SIGNALS = {s: s for s in map(Signals._make, itertools.product((False, True), repeat=3))}


def signals_from_headers(headers: dict[str, str], optout_cookie: bool) -> Signals:
    return _SIGNALS[
        optout_cookie,
        headers.get("sec-gpc", "").strip() == "1",
        headers.get("dnt", "").strip() == "1",
    ]


class ConsentPolicy:
    def __init__(self, settings: Settings) -> None:
        self._default = tuple(settings.consent_default)
        self._required = settings.consent_required
        self._missing: Action = settings.consent_missing
        self._browser = (("gpc", settings.gpc_policy), ("dnt", settings.dnt_policy))
        self._decided: dict[tuple[Signals, tuple[str, ...] | None], Decision] = {}

    def decide(self, signals: Signals, granted: Iterable[str] | None) -> Decision:
        # Few combinations exist in practice: each is decided once.
        key = (signals, None if granted is None else tuple(granted))
        decision = self._decided.get(key)
        if decision is None:
            if len(self._decided) >= 1024:  # a client inventing categories: stay bounded
                self._decided.clear()
            decision = self._decided[key] = self._decide(signals, granted)
        return decision

    def _decide(self, signals: Signals, granted: Iterable[str] | None) -> Decision:
        if signals.opted_out:
            return Decision("drop", (), "opt_out")
        categories = set(self._default if granted is None else granted)
        for name, policy in self._browser:
            if not getattr(signals, name) or policy == "ignore":
                continue
            if policy == "opt_out":
                return Decision("drop", (), name)
            categories.discard(ADVERTISING)  # no_advertising: GPC means "do not sell/share"
        ordered = tuple(sorted(categories))
        if self._required and self._required not in categories:
            return Decision(self._missing, ordered, "no_consent")
        return Decision("keep", ordered)
