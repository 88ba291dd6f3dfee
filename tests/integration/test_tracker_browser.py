"""The JavaScript tracker in a real browser: headless Chromium (Debian's) loads a page served
on localhost; its page view, marked click and custom event reach Kafka, and after opt-out
neither the tracker nor a hand-made beacon gets anything stored."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.collector_process import collector, collector_overrides, decode_event
from trackpipe.kafka_admin import read_all
from trackpipe.processes import http_get

pytestmark = pytest.mark.integration

# Headless Chrome says "HeadlessChrome", which the collector rightly routes to the bots
# topic; this test is about a person's browser, so it presents an ordinary user agent.
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
PAGE = """<!doctype html>
<html><head><title>Red shoes</title></head><body>
<a id="buy" href="#bought" data-tp-click="buy-button">Buy</a>
<div id="status">loading</div>
<script src="{collector}/t.js" data-site="shop"></script>
<script>
  var out = document.getElementById("status");
  trackpipe.consent(["analytics", "advertising"]);
  document.getElementById("buy").click();
  trackpipe.track("Add To Cart", {{product_id: "p1"}});  // normalised to add_to_cart
  trackpipe.flush();
  trackpipe.optOut().then(function () {{
    trackpipe.track("after_opt_out");  // refused by the tracker itself
    // A beacon sent by hand: the collector must refuse it because of the opt-out cookie.
    var sent = navigator.sendBeacon("{collector}/collect",
      JSON.stringify({{site: "shop", type: "forced_after_opt_out"}}));
    out.textContent = sent ? "done" : "beacon refused";
  }}, function (e) {{ out.textContent = "opt-out failed " + e; }});
</script>
</body></html>
"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium on PATH: `make browser` installs Debian's package")
    return path


@pytest.fixture
def site_server() -> Iterator[tuple[int, list[str]]]:
    """Serve the page on 127.0.0.1 (same site as the collector, another port)."""
    page: list[str] = [""]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page[0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], page
    server.shutdown()
    server.server_close()
    thread.join(5)


def browse(url: str, profile: Path) -> str:
    command = [
        chromium(),
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--user-agent={USER_AGENT}",
        "--virtual-time-budget=5000", "--dump-dom", url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def wait_for(predicate, timeout_s: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def test_tracker_in_headless_chromium(
    kafka_bootstrap: str, uid: str, tmp_path: Path, site_server: tuple[int, list[str]]
) -> None:
    port, page = site_server
    overrides = collector_overrides(kafka_bootstrap, uid)
    with collector(overrides, tmp_path / "logs") as url:
        page[0] = PAGE.format(collector=url)
        dom = browse(f"http://127.0.0.1:{port}/shop.html", tmp_path / "profile")
        assert '<div id="status">done</div>' in dom, dom
        metrics = wait_for(
            lambda: (
                'consent_dropped_total{reason="opt_out"} 1'
                in http_get(f"{url}/metrics")[1].decode()
            )
        )
        assert metrics, http_get(f"{url}/metrics")[1].decode()
    events = [decode_event(v) for _, v in read_all(kafka_bootstrap, f"raw-{uid}", idle_s=1.5)]
    assert sorted(e["event_type"] for e in events) == ["add_to_cart", "click", "page_view"]
    by_type = {e["event_type"]: e for e in events}
    assert by_type["click"]["props"]["name"] == "buy-button"
    assert by_type["add_to_cart"]["props"] == {"product_id": "p1"}
    assert by_type["page_view"]["page_title"] == "Red shoes"
    assert by_type["page_view"]["url"] == f"http://127.0.0.1:{port}/shop.html"
    # Tracked before the page granted consent: the default; afterwards: what it granted.
    assert by_type["page_view"]["consent"] == ["analytics"]
    assert by_type["add_to_cart"]["consent"] == ["advertising", "analytics"]
    devices = {e["device_id"] for e in events}
    assert len(devices) == 1 and len(devices.pop()) == 32  # the tracker's first-party id
    assert {(e["browser"], e["os"], e["device_type"]) for e in events} == {
        ("Chrome", "Linux", "desktop")
    }
    assert all(e["source"] == "collect" and e["timezone"] for e in events)
    assert read_all(kafka_bootstrap, f"dead-{uid}", idle_s=0.5) == []
    assert read_all(kafka_bootstrap, f"bots-{uid}", idle_s=0.5) == []


CONSENT_PAGE = """<!doctype html>
<html><head><title>Consent first</title></head><body>
<div id="status">loading</div>
<script src="{collector}/t.js" data-site="shop" data-require-consent="true"></script>
<script>
  var out = document.getElementById("status");
  trackpipe.track("before_consent");  // held, like the automatic page view
  setTimeout(function () {{
    trackpipe.consent(["analytics"]);  // releases what was held
    trackpipe.flush();
    trackpipe.consent([]);  // declined from now on: stored about nobody
    trackpipe.track("after_decline");
    trackpipe.flush();
    out.textContent = "done";
  }}, 50);
</script>
</body></html>
"""


def test_tracker_holds_events_until_consent_and_respects_a_decline(
    kafka_bootstrap: str, uid: str, tmp_path: Path, site_server: tuple[int, list[str]]
) -> None:
    port, page = site_server
    overrides = collector_overrides(kafka_bootstrap, uid)
    with collector(overrides, tmp_path / "logs") as url:
        page[0] = CONSENT_PAGE.format(collector=url)
        dom = browse(f"http://127.0.0.1:{port}/consent.html", tmp_path / "profile")
        assert '<div id="status">done</div>' in dom, dom
        wait_for(lambda: len(read_all(kafka_bootstrap, f"raw-{uid}", idle_s=0.5)) >= 3)
    events = {
        e["event_type"]: e
        for e in (decode_event(v) for _, v in read_all(kafka_bootstrap, f"raw-{uid}", idle_s=1))
    }
    assert set(events) == {"page_view", "before_consent", "after_decline"}
    for held in ("page_view", "before_consent"):
        assert events[held]["consent"] == ["analytics"]
        assert events[held]["device_kind"] == "cookie"
    declined = events["after_decline"]
    assert (declined["consent"], declined["device_kind"], declined["ip"]) == ([], "anonymous", "")
