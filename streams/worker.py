"""Build a worker (app + topics + agents + views) and run it."""

from __future__ import annotations

import sys

import faust

from streams.app import create_app
from streams.heap import freeze_heap_after_recovery
from streams.signals import SignalsStage, signals_topics
from streams.signals_views import register_signals_views
from streams.sink import WarehouseSink
from streams.stitching import Stitching, ensure_stage_topics
from streams.views import register_views
from trackpipe.kafka_admin import ensure_topics
from trackpipe.settings import Settings


def build_worker(settings: Settings) -> tuple[faust.App, WarehouseSink]:
    app = create_app(settings)
    sink = WarehouseSink(settings, settings.open_warehouse)
    register_views(app, sink, settings)
    # Full GC collections of the worker's long-lived objects stalled the read API by
    # 50-80 ms each (its p99); frozen once the tables are recovered. See streams/heap.py.
    freeze_heap_after_recovery(app)
    if settings.identity_enabled:
        Stitching(app, settings).register()

    if settings.signals_enabled:
        register_signals_views(app, SignalsStage(app, settings, sink).register(), settings)
    return app, sink


def run(settings: Settings) -> None:
    ensure_topics(settings)
    if settings.identity_enabled:
        ensure_stage_topics(settings)

    if settings.signals_enabled:
        ensure_topics(settings, signals_topics(settings))
    app, sink = build_worker(settings)
    worker = faust.Worker(app, sink, loglevel=settings.log_level, quiet=True)
    # faust's progress spinner sets the root logger to DEBUG (and filters in its handler), so
    # that every log call turns the spinner: each `log.debug` of faust and aiokafka then
    # builds a LogRecord, two per changelog record during table recovery. It only draws on
    # a terminal; without one, keep the root logger at the configured level.
    if not sys.stdout.isatty():
        worker.spinner = None
    worker.execute_from_commandline()
