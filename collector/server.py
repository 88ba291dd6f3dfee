"""Run the collector: bind, serve, and on SIGTERM/SIGINT stop accepting and flush Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import shutil
import signal

from collector.http import HttpProtocol, LoopWrites
from collector.metrics import Metrics
from collector.routes import Routes
from collector.service import CollectorService
from collector.sinks.base import EventSink, Producer
from collector.sinks.delivery import DeliverySink
from collector.spool import Spool
from trackpipe.kafka_admin import ensure_topics
from trackpipe.settings import Settings
from trackpipe.suppression import SuppressionList

log = logging.getLogger(__name__)


def build_routes(
    settings: Settings,
    sink: EventSink,
    metrics: Metrics,
    suppressions: SuppressionList | None = None,
) -> Routes:
    service = CollectorService(settings, sink, metrics, suppressions)
    return Routes(settings, service, sink, metrics)


async def serve(
    settings: Settings,
    sink: EventSink,
    metrics: Metrics,
    suppressions: SuppressionList | None = None,
    *,
    reuse_port: bool = False,
) -> None:
    loop = asyncio.get_running_loop()
    routes = build_routes(settings, sink, metrics, suppressions)
    writes = LoopWrites(loop)
    server = await loop.create_server(
        lambda: HttpProtocol(
            routes, settings.max_body_bytes, settings.max_url_bytes, metrics, writes
        ),
        settings.collector_host,
        settings.collector_port,
        reuse_address=True,
        reuse_port=reuse_port,
        backlog=1024,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "collector listening on http://%s:%d", settings.collector_host, settings.collector_port
    )
    sink.serve_on(loop)  # reports on this loop, not on a thread waiting for its lock
    try:
        await stop.wait()
    finally:
        sink.serve_on(None)
    log.info("collector stopping: no new connections, flushing Kafka")
    server.close()
    # Since 3.12 this also waits for idle keep-alive connections: bound it.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), timeout=5)


def make_producer(settings: Settings) -> Producer:
    options = {
        "idempotence": settings.kafka_idempotence,
        "delivery_timeout_s": settings.collector_delivery_timeout_s,
    }
    if settings.collector_producer == "confluent":
        from collector.sinks.confluent import ConfluentProducer

        return ConfluentProducer(
            settings.kafka_bootstrap,
            stats_interval_s=settings.collector_stats_interval_s,
            **options,  # type: ignore[arg-type]
        )
    from collector.sinks.kafka import KafkaPythonProducer

    return KafkaPythonProducer(settings.kafka_bootstrap, **options)  # type: ignore[arg-type]


def open_spool(settings: Settings, index: int) -> Spool:
    spool = process_spool(settings, index)
    _adopt_orphans(spool, settings, index)
    return spool


def process_spool(settings: Settings, index: int) -> Spool:
    """The spool of collector process `index`, as it is on disk (no orphans adopted)."""
    return Spool(
        settings.collector_spool_dir / str(index),
        settings.collector_spool_max_bytes,
        segment_bytes=settings.collector_spool_segment_bytes,
        fsync_interval_s=settings.collector_spool_fsync_s,
    )


def _adopt_orphans(spool: Spool, settings: Settings, index: int) -> None:
    """Take over the spools of processes that no longer exist (fewer processes than before)."""
    n = settings.collector_processes
    for path in sorted(settings.collector_spool_dir.glob("*")):
        if not path.name.isdigit() or int(path.name) < n or int(path.name) % n != index:
            continue
        orphan = process_spool(settings, int(path.name))
        while True:
            records, position = orphan.read(10_000)
            if not records:
                break
            if spool.append(records) < len(records):
                raise RuntimeError(f"spool {spool.directory} too small to adopt {path}")
            orphan.commit(position, len(records))
        orphan.close()
        shutil.rmtree(path)
        log.warning("adopted the spool of former process %s", path.name)


def run(settings: Settings, index: int | None = None) -> None:
    """One collector process; `index` is set for the children of a supervisor."""
    if index is None and settings.collector_processes > 1:
        from collector.supervisor import supervise

        raise SystemExit(supervise(settings))
    try:
        ensure_topics(settings, timeout_s=10)
    except RuntimeError as exc:  # keep answering: the spool takes the events meanwhile
        log.error("%s; starting anyway", exc)
    metrics = Metrics()
    sink = DeliverySink(
        make_producer(settings),
        open_spool(settings, index or 0),
        metrics,
        delivery_timeout_s=settings.collector_delivery_timeout_s,
    )
    # Everything allocated so far lives as long as the process: keep the collector's
    # garbage collections from scanning it again and again under load.
    suppressions = SuppressionList(settings.kafka_bootstrap, settings.topic_suppressions)
    # Loaded in the background: a collector restarted while Kafka is away must answer at once
    # (its spool holds the events); the sink reads the list to its end before writing
    # anything, so an erased person's events that slip through meanwhile are never stored.
    suppressions.start_soon()
    gc.freeze()
    try:
        _run_loop(serve(settings, sink, metrics, suppressions, reuse_port=index is not None))
    finally:
        suppressions.stop()
        sink.close(timeout=settings.collector_shutdown_timeout_s)
        log.info("collector stopped")


def _run_loop(main: object) -> None:
    try:
        import uvloop

        uvloop.run(main)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(main)  # type: ignore[arg-type]
