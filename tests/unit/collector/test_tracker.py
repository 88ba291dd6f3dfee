"""The tracker script is served, cacheable, and revalidated by ETag."""

from __future__ import annotations

from collector.tracker import tracker_source
from tests.unit.collector.helpers import get, header


def test_tracker_is_served_as_javascript_with_an_etag(routes) -> None:
    response = get(routes, "/t.js")
    assert response.status == 200
    assert response.content_type.startswith("application/javascript")
    assert b"sendBeacon" in response.body and b"data-tp-click" in response.body
    assert response.body == tracker_source()[0]
    [etag] = header(response, "ETag")
    again = get(routes, "/t.js", headers={"if-none-match": etag})
    assert again.status == 304 and again.body == b""
