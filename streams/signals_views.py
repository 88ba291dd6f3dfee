"""The read API for retargeting systems: profiles by person or identifier, audience export.

Every endpoint but /signals/stats/ needs a key of TRACKPIPE_READ_API_KEYS
(`Authorization: Bearer <key>` or `X-API-Key: <key>`); a wrong or missing key gets 401
before anything is looked up or routed. Profile lookups are routed to the worker that owns
the key's partition (faust `table_route`); the owner answers from its table in memory.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from dataclasses import asdict
from typing import Any

import faust
import orjson
from faust.web import Request, Response, View

from streams.person_updates import is_tombstone
from streams.signals import SignalsStage
from streams.summaries import summary
from streams.table_store import ChangelogStore
from trackpipe.settings import Settings

MAX_PAGE = 10_000
ID_KINDS = ("cookie_ids", "app_ids", "email_hashes", "advertising_ids")
_CURSOR = re.compile(r"^[\w.:@-]{0,128}$")


def api_keys(settings: Settings) -> list[bytes]:
    if settings.read_api_keys is None:
        return []
    secret = settings.read_api_keys.get_secret_value()
    return [k.strip().encode() for k in secret.split(",") if k.strip()]


def read_authorized(keys: list[bytes], request: Request) -> bool:
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else request.headers.get("X-API-Key", "")
    token = given.encode()
    # Compare with every key, whatever matched: the time taken tells nothing about them.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token, key)
    return matched and bool(token)


def _at(request: Request) -> int:
    """Answers are as of now; `?at=<epoch ms>` asks for another instant (reproducible reads)."""
    at = request.query.get("at", "")
    return int(at) if at.isdigit() and len(at) <= 13 else int(time.time() * 1000)


async def routable(app: faust.App, table: faust.Table) -> bool:
    """Can faust's router place a key of `table`? It partitions the key with the producer's
    metadata for the table's changelog topic, and until the producer has fetched that topic
    (nothing written to it yet since the start) it fails with a TypeError: a 500 for a
    lookup that should have been a 404. Fetch it first."""
    producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
    topic = table.changelog_topic.get_topic_name()
    if producer.client.cluster.partitions_for_topic(topic) is not None:
        return True  # every lookup after the first: no task, no timer on the hot path
    try:
        await asyncio.wait_for(producer.partitions_for(topic), 5)
    except Exception:  # a timeout, an unknown topic: not routable yet
        return False
    return True


def register_signals_views(app: faust.App, stage: SignalsStage, settings: Settings) -> None:
    keys = api_keys(settings)
    denied = orjson.dumps({"error": "missing or wrong API key"})
    db_suffix = "_all" if settings.warehouse_cluster else ""

    def unauthorized(view: View) -> Response:
        return view.bytes(denied, content_type="application/json", status=401)

    def starting(view: View) -> Response:
        return view.json({"error": "starting, retry"}, status=503)

    def profile_response(view: View, raw: bytes | None, request: Request) -> Response:
        profile = orjson.loads(raw) if raw is not None else None
        if profile is None and not stage.recovered:
            # Not "unknown": the table is still being loaded from its changelog.
            return view.json({"error": "recovering, retry"}, status=503)
        if profile is None or stage.erased(profile):
            return view.json({"error": "unknown person"}, status=404)
        if is_tombstone(profile):  # merged into another person: send the client there
            location = f"/signals/profiles/{profile['into']}/"
            if request.query_string:
                location += f"?{request.query_string}"
            return view.json(
                {"person_id": profile["into"]}, status=307, headers={"Location": location}
            )
        body = orjson.dumps(summary(profile, _at(request), stage.cfg))
        return view.bytes(body, content_type="application/json")

    @app.page("/signals/profiles/{person_id}/")
    class Profile(View):
        async def get(self, request: Request, person_id: str) -> Response:
            if not read_authorized(keys, request):
                return unauthorized(self)
            if not await routable(app, stage.profiles):
                return starting(self)
            return await self.owner(request, person_id=person_id)

        @app.table_route(table=stage.profiles, match_info="person_id")
        async def owner(self, request: Request, person_id: str) -> Response:
            return profile_response(self, stage.profiles.get(person_id.encode()), request)

    @app.page("/signals/identifiers/{identifier}/")
    class ByIdentifier(View):
        """`cookie:<id>`, `app:<id>`, `email:<sha256>`, `adid:<id>` or `user:<id>`."""

        async def get(self, request: Request, identifier: str) -> Response:
            if not read_authorized(keys, request):
                return unauthorized(self)
            if not await routable(app, stage.identifiers):
                return starting(self)
            return await self.owner(request, identifier=identifier)

        @app.table_route(table=stage.identifiers, match_info="identifier")
        async def owner(self, request: Request, identifier: str) -> Response:
            person = stage.identifiers.get(identifier.encode())
            if person is None:
                return self.json({"error": "unknown identifier"}, status=404)
            person_id = person.decode()
            raw = stage.profiles.get(person_id.encode())
            if raw is not None:  # this worker owns the person too: answer at once
                return profile_response(self, raw, request)
            # Another worker owns the person: send the client there (same key, same query).
            location = f"/signals/profiles/{person_id}/"
            if request.query_string:
                location += f"?{request.query_string}"
            return self.json({"person_id": person_id}, status=307, headers={"Location": location})

    @app.page("/signals/audiences/{audience}/members/")
    class Members(View):
        """A page of an audience's current members with their retargeting identifiers.

        `?limit=` (≤ 10000), `?after=<person_id>` (the previous page's `next`), `?kind=` one
        of cookie_ids, app_ids, email_hashes, advertising_ids to get only those."""

        async def get(self, request: Request, audience: str) -> Response:
            if not read_authorized(keys, request):
                return unauthorized(self)
            limit, after = request.query.get("limit", "1000"), request.query.get("after", "")
            kind = request.query.get("kind", "")
            if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE:
                return self.json({"error": f"limit must be 1 to {MAX_PAGE}"}, status=400)
            if not _CURSOR.match(after) or (kind and kind not in ID_KINDS):
                return self.json({"error": "bad after or kind"}, status=400)
            rows = await stage.sink.with_warehouse(
                lambda wh: wh.query(
                    _MEMBERS.format(db=wh.database, s=db_suffix),
                    {"audience": audience, "after": after, "limit": int(limit)},
                )
            )
            members: list[dict[str, Any]] = []
            for person_id, *ids, entered in rows:
                member = dict(zip(ID_KINDS, (list(i) for i in ids), strict=True))
                member = {kind: member[kind]} if kind else member
                members.append({"person_id": person_id, **member, "entered_at": int(entered)})
            page_next = members[-1]["person_id"] if len(members) == int(limit) else None
            return self.json({"audience": audience, "members": members, "next": page_next})

    @app.page("/signals/audiences/")
    class Audiences(View):
        async def get(self, request: Request) -> Response:
            if not read_authorized(keys, request):
                return unauthorized(self)
            declared = [
                {"name": a.name, "description": a.description, "rule": a.rule}
                for a in stage.audiences
            ]
            return self.json({"audiences": declared})

    @app.page("/signals/stats/")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            bulk = {  # changelog records each table read in bulk (streams/table_store.py)
                t.name: t.data.bulk_records
                for t in (stage.profiles, stage.identifiers)
                if isinstance(t.data, ChangelogStore)
            }
            return self.json(
                {**asdict(stage.stats), "recovered": stage.recovered, "read_in_bulk": bulk}
            )


# Current members: the open spell of each person, minus anyone whose latest profile is no
# longer eligible (consent withdrawn) or was merged away: belt and braces over the exits.
_MEMBERS = """
SELECT person_id, cookie_ids, app_ids, email_hashes, advertising_ids, toUInt32(entered_at)
FROM {db}.audience_members{s} FINAL
WHERE audience = %(audience)s AND toUInt32(exited_at) = 0 AND person_id > %(after)s
  AND person_id NOT IN (
      SELECT person_id FROM {db}.profiles{s} FINAL
      WHERE audience_eligible = 0 OR merged_into != ''
  )
ORDER BY person_id
LIMIT %(limit)s
"""
