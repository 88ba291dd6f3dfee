"""Soak: a steady beacon rate for minutes, sampling each process's memory.

Usage: python benchmarks/soak.py [--minutes 10] [--rate 300] [--bound-mb 64]
                                 [--visitors 6000] [--gap-s 60]
Needs `make services`. Exits 1 if a process keeps growing: the mean RSS of the last third of the
run exceeds that of the second third by more than --bound-mb (the first third is warm-up).

The traffic is a returning population, so that a worker holding it reaches a steady state:
`--visitors` visitor cookies in ten cohorts, one cohort active at a time for a tenth of a
cycle that lasts a third of the run (the warm-up third holds one whole cycle), so each
visitor comes back every cycle after a quiet spell longer than the session gap. The worker
runs with that gap (`--gap-s`, default 60 s; the product's default is 30 minutes) and 10 s
of allowed lateness, so sessions close during the run and their events leave the state.
What a worker rightly keeps (a profile and an identity per person, open sessions) is then
bounded, and growth past the bound is a leak. `--visitors 0` gives every beacon a new
visitor instead: state then grows with the traffic by design (a person's profile is kept),
which the bound does not allow for.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.e2e import send_steady
from schemas.warehouse import connect
from trackpipe.processes import Pipeline, Proc, isolated_overrides


def rss_mb(proc: Proc) -> float:
    """Resident memory of the process and its children (a supervisor's workers count too)."""
    total = 0
    pids = [proc.popen.pid]
    for pid in list(pids):
        children = Path(f"/proc/{pid}/task/{pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


def returning(run: str, visitors: int, rate: int, cycle_s: float) -> Callable[[int], str]:
    """Beacon i → a visitor cookie: ten cohorts, each active for a tenth of `cycle_s`."""
    cohorts = 10
    size = max(1, visitors // cohorts)
    slot = max(1, int(rate * cycle_s / cohorts))  # beacons per cohort's turn

    def visitor(i: int) -> str:
        cohort = i // slot % cohorts
        return f"{run}{cohort * size + i % size:024x}"  # 32 hex digits, as the collector's

    return visitor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=int, default=300)
    parser.add_argument("--bound-mb", type=float, default=64)
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--clickhouse", default="127.0.0.1:9000")
    parser.add_argument("--visitors", type=int, default=6000, help="0: a new visitor per beacon")
    parser.add_argument("--gap-s", type=float, default=60.0, help="the worker's session gap")
    args = parser.parse_args()
    uid = uuid.uuid4().hex[:8]
    url = f"clickhouse://{args.clickhouse}/soak_{uid}"
    o: dict[str, object] = {
        "kafka_bootstrap": args.kafka,
        "warehouse_url": url,
        **isolated_overrides(f"soak-{uid}"),
        "session_gap_s": args.gap_s,
        "allowed_lateness_s": 10,
    }
    seconds = args.minutes * 60
    visitor = returning(uid, args.visitors, args.rate, seconds / 3) if args.visitors else None
    samples: dict[str, list[float]] = {"collector": [], "worker": []}
    with tempfile.TemporaryDirectory() as logs, Pipeline(o, Path(logs)) as pipeline:
        assert pipeline.collector is not None and pipeline.worker is not None
        procs = {"collector": pipeline.collector, "worker": pipeline.worker}
        sender = threading.Thread(
            target=lambda: asyncio.run(
                send_steady(int(o["collector_port"]), uid, args.rate, seconds, {}, visitor)
            )
        )
        sender.start()
        step = max(1.0, seconds / 60)
        while sender.is_alive():
            for name, proc in procs.items():
                samples[name].append(rss_mb(proc))
            print(" ".join(f"{n}={v[-1]:.0f}MB" for n, v in samples.items()), flush=True)
            time.sleep(step)
        sender.join()
        written = pipeline.wait_rows_written(int(args.rate * seconds), timeout_s=120)
    with connect(url) as wh:
        wh.execute(f"DROP DATABASE {wh.database}")
    print(f"{written} events written in {args.minutes:g} min at {args.rate}/s")
    failed = False
    for name, values in samples.items():
        third = max(1, len(values) // 3)
        middle = sum(values[third : 2 * third]) / max(1, len(values[third : 2 * third]))
        last = sum(values[-third:]) / third
        grew = last - middle
        verdict = "OK" if grew <= args.bound_mb else "GROWING"
        failed |= grew > args.bound_mb
        print(
            f"{name}: peak {max(values):.0f} MB, mean {middle:.0f} → {last:.0f} MB "
            f"(+{grew:.0f} MB, bound {args.bound_mb:.0f}) {verdict}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
