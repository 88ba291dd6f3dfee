"""Soak: a steady beacon rate for minutes, sampling each process's memory.

Usage: python benchmarks/soak.py [--minutes 10] [--rate 300] [--bound-mb 64]
Needs `make services`. Exits 1 if a process keeps growing: the mean RSS of the last third of the
run exceeds that of the second third by more than --bound-mb (the first third is warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
import uuid
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=int, default=300)
    parser.add_argument("--bound-mb", type=float, default=64)
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--clickhouse", default="127.0.0.1:9000")
    args = parser.parse_args()
    uid = uuid.uuid4().hex[:8]
    url = f"clickhouse://{args.clickhouse}/soak_{uid}"
    o: dict[str, object] = {
        "kafka_bootstrap": args.kafka,
        "warehouse_url": url,
        **isolated_overrides(f"soak-{uid}"),
    }
    seconds = args.minutes * 60
    samples: dict[str, list[float]] = {"collector": [], "worker": []}
    with tempfile.TemporaryDirectory() as logs, Pipeline(o, Path(logs)) as pipeline:
        assert pipeline.collector is not None and pipeline.worker is not None
        procs = {"collector": pipeline.collector, "worker": pipeline.worker}
        sender = threading.Thread(
            target=lambda: asyncio.run(
                send_steady(int(o["collector_port"]), uid, args.rate, seconds, {})
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
