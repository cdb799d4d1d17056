"""`python -m tests.chaos`: run Warren under a seeded fault schedule and check issue 7's
invariants on private Postgres and RabbitMQ servers (the machine's own are never touched).

    python -m tests.chaos --sagas 250 --seed 7 --duration 90 --faults 20    # the CI run
    python -m tests.chaos --sagas 5000 --seed 11 --duration 1200 --faults 120

Prints the seed and the schedule first, then one JSON summary (last line of stdout).
Exit code 0 when every invariant holds, 1 otherwise, 2 when the harness itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sys
from pathlib import Path

from tests.chaos.harness import Config, Harness
from tests.chaos.schedule import ALL_KINDS, Kind


def parse(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sagas", type=int, default=250, help="sagas to start (default 250)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the schedule and the load")
    parser.add_argument(
        "--duration", type=float, default=90.0, help="seconds of load and faults (default 90)"
    )
    parser.add_argument("--faults", type=int, default=20, help="faults to inject (default 20)")
    parser.add_argument(
        "--kinds",
        default=",".join(k.value for k in ALL_KINDS),
        help="comma-separated fault kinds (default: all): " + ", ".join(k.value for k in ALL_KINDS),
    )
    parser.add_argument("--orchestrators", type=int, default=2)
    parser.add_argument("--workers-per-pool", type=int, default=2)
    parser.add_argument(
        "--concurrency", type=int, default=None, help="per worker process (default: warren's)"
    )
    parser.add_argument(
        "--pause", default="5,20", help="min,max seconds a SIGSTOPped process stays stopped"
    )
    parser.add_argument("--drain-timeout", type=float, default=150.0)
    parser.add_argument(
        "--travel-every",
        type=int,
        default=4,
        help="every Nth saga is a travel saga, the others orders (default 4; 0: orders only)",
    )
    parser.add_argument(
        "--events-every",
        type=int,
        default=5,
        help="alongside every Nth start, an order placed and paid by events (default 5; 0: none)",
    )
    parser.add_argument(
        "--batch-every",
        type=int,
        default=3,
        help="the orders of every Nth block of 8 starts go in one batch request (default 3; "
        "0: none)",
    )
    parser.add_argument("--log-dir", type=Path, default=None, help="keep process logs here")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the log directory even when all passed"
    )
    args = parser.parse_args(argv)
    try:
        kinds = tuple(Kind(k.strip()) for k in args.kinds.split(",") if k.strip())
    except ValueError as exc:
        parser.error(str(exc))
    low, high = (float(x) for x in args.pause.split(","))
    return Config(
        sagas=args.sagas,
        seed=args.seed,
        duration=args.duration,
        faults=args.faults,
        kinds=kinds,
        orchestrators=args.orchestrators,
        workers_per_pool=args.workers_per_pool,
        concurrency=args.concurrency,
        pauses=(low, high),
        drain_timeout=args.drain_timeout,
        travel_every=args.travel_every,
        events_every=args.events_every,
        batch_every=args.batch_every,
        log_dir=args.log_dir,
        keep_logs=args.keep_logs or args.log_dir is not None,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    config = parse(argv)
    harness = Harness(config)
    print(f"chaos: seed {config.seed}, {config.sagas} sagas over {config.duration:.0f}s")
    print(f"chaos: schedule of {len(harness.schedule)} faults:")
    for fault in harness.schedule:
        print(f"  {fault.describe()}")
    sys.stdout.flush()
    try:
        summary = asyncio.run(harness.run())
    except Exception as exc:
        logging.exception("chaos: the harness failed")
        print(json.dumps({"ok": False, "seed": config.seed, "harness_error": repr(exc)}))
        return 2
    for record in harness.run_state.applied:
        print(f"  applied t={record['at']:7.2f}s {record['fault']} -> {record.get('outcome')}")
    for exit_report in harness.run_state.unexpected_exits:
        print(f"chaos: {exit_report}")
    if summary["ok"] and not config.keep_logs:
        shutil.rmtree(summary["logs"], ignore_errors=True)
        summary["logs"] = None
    print(json.dumps(summary, default=str))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
