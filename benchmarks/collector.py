"""Collector benchmark: beacons/s delivered to Kafka by one process, against nginx empty_gif.

    .venv/bin/python -m benchmarks.collector [--seconds 10] [--producers confluent,kafka-python]

For each producer it starts one collector process on the real Kafka (127.0.0.1:9092 by
default, a fresh topic per run) and prints:
  - beacons/s delivered to Kafka, counted on the broker (topic end offsets before/after),
    and whether every acknowledged beacon is there;
  - p50/p99 latency at a fixed moderate rate (asyncio client, measured from when each
    request was due);
  - CPU per beacon of the collector process (all its threads, from /proc);
and, in the same run and with the same URL and headers, the rate of Debian's nginx
`empty_gif` (one worker, access log on) as the reference, with the ratio against the
target (0.25) and the goal (0.5). Load comes from wrk (`make bench-deps` installs it and
nginx), or from the asyncio generator when wrk is missing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as a file: benchmarks/ must not shadow the packages
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks import loadgen
from trackpipe.processes import Proc, free_port, start_trackpipe, stop, wait_http

TARGET, GOAL = 0.25, 0.5
PATH = (
    "/i?s=shop&e=page_view&u=https%3A%2F%2Fshop.example%2Fshoes%2Frunning%2F42"
    "&r=https%3A%2F%2Fwww.google.com%2F&cat=shoes&pid=sku-42&uid=user-17"
)
HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36",
    "Cookie": "tp_vid=0123456789abcdef0123456789abcdef",
    "Accept": "image/avif,image/webp,*/*",
}
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location = /i {{ empty_gif; add_header Cache-Control no-store; }}
    }}
}}
"""


def load(port: int, seconds: float, connections: int) -> tuple[int, float]:
    """Closed-loop load: (successful requests, seconds).

    With wrk, the beacons vary as a site's do (benchmarks/beacons.lua: pages, referrers,
    visitors, user ids); the asyncio generator sends `PATH` only.
    """
    if shutil.which("wrk"):
        args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
        args += ["-s", str(Path(__file__).with_name("beacons.lua"))]
        for key, value in HEADERS.items():
            if key != "Cookie":  # one visitor cookie per beacon, from the script
                args += ["-H", f"{key}: {value}"]
        started = time.monotonic()
        out = subprocess.run(
            [*args, f"http://127.0.0.1:{port}{PATH}"], capture_output=True, text=True, check=True
        ).stdout
        elapsed = time.monotonic() - started
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: .*", out)
        if bad or errors:
            print(f"    wrk: {bad.group(0) if bad else ''} {errors.group(0) if errors else ''}")
        return requests - (int(bad.group(1)) if bad else 0), elapsed
    req = loadgen.request_bytes("127.0.0.1", port, PATH, HEADERS)
    result = loadgen.throughput("127.0.0.1", port, req, connections, seconds)
    return result.requests - result.errors, result.seconds


def nginx_rate(seconds: float, connections: int) -> float:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        port = free_port()
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=tmp, port=port))
        proc = subprocess.Popen([nginx, "-c", str(conf), "-p", tmp], stderr=subprocess.PIPE)
        try:
            _wait_port(port)
            ok, elapsed = load(port, seconds, connections)
        finally:
            proc.send_signal(signal.SIGQUIT)  # graceful: flushes the access log
            proc.wait(timeout=10)
        logged = sum(1 for _ in (Path(tmp) / "access.log").open())
        print(f"  nginx empty_gif: {ok / elapsed:,.0f} req/s ({ok} requests, {logged} logged)")
        return ok / elapsed


def _wait_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def end_offsets(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","))
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        offsets = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(offsets.values())
    finally:
        consumer.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def collector_run(
    producer: str, bootstrap: str, seconds: float, connections: int, rate: float, tmp: Path
) -> float:
    uid = uuid.uuid4().hex[:8]
    topic = f"bench-{uid}"
    overrides = {
        "kafka_bootstrap": bootstrap,
        "topic_raw": topic,
        "topic_dead": f"bench-dead-{uid}",
        "collector_port": free_port(),
        "collector_producer": producer,
        "collector_spool_dir": tmp / f"spool-{uid}",
        "log_level": "warning",
    }
    port = int(overrides["collector_port"])  # type: ignore[call-overload]
    proc = start_trackpipe(f"collector-{producer}", ["collector"], overrides, tmp)
    try:
        wait_http(proc, f"http://127.0.0.1:{port}/readyz")
        before = end_offsets(bootstrap, topic)
        cpu_before = cpu_seconds(proc.popen.pid)
        started = time.monotonic()
        ok, _ = load(port, seconds, connections)
        delivered, finished = _settle(bootstrap, topic, before, ok, started)
        cpu = cpu_seconds(proc.popen.pid) - cpu_before
        rate_delivered = delivered / (finished - started)
        accounted = "every one there" if delivered >= ok else f"{ok - delivered} MISSING"
        print(
            f"  collector [{producer}]: {rate_delivered:,.0f} beacons/s delivered to Kafka "
            f"({delivered} on the broker for {ok} acknowledged: {accounted}), "
            f"CPU {cpu / max(delivered, 1) * 1e6:.0f} µs/beacon"
        )
        _latency(port, rate, proc)
        _spool_check(port)
        return rate_delivered
    finally:
        stop(proc)


def _settle(bootstrap: str, topic: str, before: int, ok: int, started: float) -> tuple[int, float]:
    """Wait until the broker has every acknowledged beacon (or stops growing)."""
    last, last_change = -1, time.monotonic()
    while time.monotonic() - last_change < 3:
        delivered = end_offsets(bootstrap, topic) - before
        if delivered != last:
            last, last_change = delivered, time.monotonic()
        if delivered >= ok:
            break
        time.sleep(0.05)
    return last, last_change


def _latency(port: int, rate: float, proc: Proc) -> None:
    req = loadgen.request_bytes("127.0.0.1", port, PATH, HEADERS)
    result = loadgen.latency("127.0.0.1", port, req, rate, seconds=5)
    print(
        f"    latency at {rate:,.0f} beacons/s: p50 {result.percentile(0.5) * 1000:.2f} ms, "
        f"p99 {result.percentile(0.99) * 1000:.2f} ms ({result.requests} requests, "
        f"{result.errors} errors)"
    )


def _spool_check(port: int) -> None:
    from trackpipe.processes import http_get

    body = http_get(f"http://127.0.0.1:{port}/metrics")[1].decode()
    spooled = re.search(r"^trackpipe_spool_replayed_total (\d+)", body, re.MULTILINE)
    refused = sum(
        int(m) for m in re.findall(r"^trackpipe_events_refused_total\{.*\} (\d+)", body, re.M)
    )
    print(f"    spooled then replayed: {spooled.group(1) if spooled else 0}, refused: {refused}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=float, default=2000, help="for the latency probe")
    parser.add_argument("--producers", default="confluent,kafka-python")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found (make bench-deps): using the asyncio load generator")
    print(f"load: {args.connections} connections, {args.seconds:g} s; URL {PATH}")
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
        reference = [nginx_rate(args.seconds, args.connections)]
        rates = {
            p: collector_run(
                p, args.bootstrap, args.seconds, args.connections, args.rate, Path(tmp)
            )
            for p in args.producers.split(",")
        }
        reference.append(nginx_rate(args.seconds, args.connections))
    nginx = sum(reference) / len(reference)
    print(f"nginx empty_gif reference (mean of the runs before and after): {nginx:,.0f} req/s")
    for producer, rate in rates.items():
        ratio = rate / nginx
        verdict = "goal met" if ratio >= GOAL else "target met" if ratio >= TARGET else "BELOW"
        print(
            f"  {producer:>12}: {rate:,.0f}/s = {ratio:.2f} of nginx "
            f"(target {TARGET}, goal {GOAL}): {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
