"""The `trackpipe` command: collector, worker, migrate, topics, sign-link, demo."""

from __future__ import annotations

import argparse
import logging
import sys

from trackpipe.settings import Settings, get_settings


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from schemas.migrate import context, migrate, plan

    with settings.open_warehouse() as warehouse:
        c = context(warehouse, settings.warehouse_cluster, settings.funnel)
        print(c.features.describe())
        steps = plan(warehouse, c) if args.plan else migrate(warehouse, c)
        verb = "pending" if args.plan else "applied"
        if not steps:
            print(f"database {warehouse.database}: up to date")
        for step in steps:
            print(f"{verb} {step.migration.version:04d} {step.migration.name}")
            if args.plan:
                for statement in step.statements:
                    print("    " + " ".join(statement.split()))
    return 0


def _retention(settings: Settings, args: argparse.Namespace) -> int:
    from schemas.migrate import apply_retention, context

    days = args.days if args.days is not None else settings.retention_days
    if days <= 0:
        print("retention: keeping everything (set TRACKPIPE_RETENTION_DAYS or --days)")
        return 0
    with settings.open_warehouse() as warehouse:
        done = apply_retention(warehouse, days, context(warehouse, settings.warehouse_cluster))
    print(f"retention {days} days: " + ("; ".join(done) or "nothing older to drop"))
    return 0


def _erase(settings: Settings, args: argparse.Namespace) -> int:
    from trackpipe.erasure import Identifier, erase
    from trackpipe.erasure_publish import publish_erasure
    from trackpipe.kafka_admin import ensure_topics

    identifier = Identifier.parse(args.identifier)
    with settings.open_warehouse() as warehouse:
        report = erase(warehouse, identifier, "cli")
    ensure_topics(settings)
    keys = publish_erasure(settings, report.identifiers)
    kinds = sorted({i.kind for i in report.identifiers})
    print(
        f"erasure {report.erasure_id}: {len(keys)} linked identifiers ({', '.join(kinds)}) "
        f"deleted from {', '.join(report.tables)}; future collection suppressed"
    )
    return 0


def _reliability(settings: Settings, args: argparse.Namespace) -> int:
    from trackpipe.reliability import regenerate

    print(regenerate(check_only=args.check))
    return 0


def _collector(settings: Settings, args: argparse.Namespace) -> int:
    from collector.server import run

    run(settings, args.child)
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from streams.worker import run

    sys.argv = [sys.argv[0]]  # faust's Worker reads argv; ours are already parsed
    run(settings)
    return 0


def _topics(settings: Settings, args: argparse.Namespace) -> int:
    from trackpipe.kafka_admin import ensure_topics

    ensure_topics(settings)
    print(f"topics ready: {settings.topic_raw}, {settings.topic_dead}, {settings.topic_bots}")
    return 0


def _sign_link(settings: Settings, args: argparse.Namespace) -> int:
    from collector.email import sign_link

    if settings.email_link_key is None:
        print("TRACKPIPE_EMAIL_LINK_KEY is not set: nothing to sign with", file=sys.stderr)
        return 2
    key = settings.email_link_key.get_secret_value().encode()
    base = args.base_url or settings.public_url
    try:
        if args.url:
            print(sign_link(base, key, args.site, args.campaign, args.recipient, args.url))
        else:
            print(sign_link(base, key, args.site, args.campaign, args.recipient))
    except ValueError as exc:
        print(f"cannot sign: {exc}", file=sys.stderr)
        return 2
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from trackpipe.demo import run_demo

    return run_demo(persons=args.persons, workdir=args.workdir, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trackpipe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    collector = sub.add_parser("collector", help="run the HTTP collector")
    # Set by the supervisor of `collector_processes` > 1 for each of its children.
    collector.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    collector.set_defaults(func=_collector)
    sub.add_parser("worker", help="run a stream worker (faust)").set_defaults(func=_worker)
    migrate = sub.add_parser("migrate", help="apply ClickHouse migrations")
    migrate.add_argument("--plan", action="store_true", help="show what would be applied")
    migrate.set_defaults(func=_migrate)
    retention = sub.add_parser("retention", help="apply the events retention (TTL or drop)")
    retention.add_argument("--days", type=int, default=None)
    retention.set_defaults(func=_retention)
    erase_cmd = sub.add_parser("erase", help="erase a person everywhere and suppress them")
    erase_cmd.add_argument(
        "identifier", help="email:<address> | email_hash:<sha256> | user:<id> | device:<id>"
    )
    erase_cmd.set_defaults(func=_erase)
    reliability = sub.add_parser(
        "reliability", help="write the fault tests' latest figures into docs/reliability.md"
    )
    reliability.add_argument("--check", action="store_true", help="render without writing")
    reliability.set_defaults(func=_reliability)
    sub.add_parser("topics", help="create the Kafka topics").set_defaults(func=_topics)
    sign = sub.add_parser(
        "sign-link", help="print a signed e-mail click redirect (or open pixel without --url)"
    )
    sign.add_argument("--site", required=True)
    sign.add_argument("--campaign", required=True)
    sign.add_argument("--recipient", required=True, help="your user id for the recipient")
    sign.add_argument("--url", default="", help="click target; omit for the open pixel")
    sign.add_argument("--base-url", default="", help="default: TRACKPIPE_PUBLIC_URL")
    sign.set_defaults(func=_sign_link)
    demo = sub.add_parser("demo", help="run the whole pipeline on embedded defaults")
    demo.add_argument("--persons", type=int, default=300)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--workdir", default=".demo")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The Kafka clients narrate every connection at INFO; keep their warnings and errors.
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.root.level))
    return int(args.func(settings, args) or 0)


if __name__ == "__main__":
    sys.exit(main())
