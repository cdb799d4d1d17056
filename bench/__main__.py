"""The saga benchmark of issue 6: the "order-3" workload on real Postgres and RabbitMQ.

    .venv/bin/python -m bench                      # 2,000 concurrent + 200 one at a time
    .venv/bin/python -m bench --quick              # 200 + 20: well under a minute
    .venv/bin/python -m bench --orchestrators 2 --workers 2
    .venv/bin/python -m bench --scaling            # concurrent: 1|2 orchestrators x 1|2 workers
    .venv/bin/python -m bench --profile /tmp/prof  # py-spy raw stacks of every process
    .venv/bin/python -m bench --workload events    # order-3 with a wait for an event
    .venv/bin/python -m bench --floor              # and the floor: Warren as a fraction of it

Each configuration gets its own scratch database and RabbitMQ vhost (dropped at the end, also on
failure or Ctrl-C); `warren migrate`, `warren register bench.order3:order3`, then `warren api`,
`warren orchestrator` (xN) and `warren worker --pool payments|inventory` (xN per pool) run as
separate OS processes with Warren's default settings. Sagas are started through the HTTP API.
The JSON figures go to stdout, progress to stderr.

With ``--floor``, the floor (bench/floor: the simplest pipeline with the same guarantees, one
orchestrator and one worker process on aio-pika and asyncpg) runs first, on scratch servers of
its own, with the same warm-up and saga count; ``comparison`` then gives both throughputs, both
CPU per saga and ``warren_to_floor``, Warren's sagas/s as a fraction of the floor's: the figure
of merit, since absolute figures move between machines.

What the figures mean (all latencies come from database timestamps, not from polling):

- ``end_to_end``: instance ``created_at`` (the API's clock when it decided to start it) ->
  ``updated_at`` of its terminal transition (the orchestrator's clock).
- ``sagas_per_second``: instances / (first ``created_at`` -> last terminal ``updated_at``);
  ``client_sagas_per_second``: instances / (first start request sent -> all seen terminal, polled
  every 20 ms).
- ``steps.step_to_step``: a worker's transaction start for command k (``step_results.recorded_at``,
  ``now()`` of the transaction that claims the inbox row, i.e. when the command was consumed) ->
  the same for command k+1 of the instance. It includes the worker committing and publishing the
  reply of k, the orchestrator consuming it and committing and publishing command k+1, and its
  delivery. Warren stores no "reply committed" time, so the issue's "reply committed -> next
  command consumed" lies between ``orchestrator_to_worker`` (a lower bound: from the orchestrator's
  decision, inside the reply's transaction) and ``step_to_step`` (an upper bound: the handler does
  nothing, so it adds only the worker's own transaction). A failed ``charge`` leaves no
  ``step_results`` row (its savepoint is rolled back), so the hand-overs around it are missing.
- ``cpu_seconds_per_saga``: deltas of utime+stime over the concurrent run (first start -> all
  terminal) of our processes by kind; ``postgres`` and ``rabbitmq`` sum every ``postgres`` and
  ``beam.smp`` process on the machine, so other work on these servers counts too.
- ``peak_rss_mb``: VmHWM of each Warren process, read just before stopping it.
- ``round_trips`` (with --count-sagas N; approximate, pg_stat lags): commits in the database while
  N sagas ran one at a time, minus the idle background rate. `python -m bench.roundtrips` counts
  every statement of one saga exactly, from the Postgres log.
- ``events`` (workloads that wait for an event, bench/feed.py): events ``published`` by the
  benchmark, ``applied`` to a wait (``warren.event_deliveries``), of which ``arrived_before_wait``
  were recorded before their wait began (kept, then taken); ``applied_per_second`` over the first
  to the last application; ``published_to_applied`` for the events published once their wait had
  begun (the benchmark's clock before the publish -> the orchestrator's when it applied it); events
  the instances ``emitted``, ``emitted_read_back`` (distinct ids) from a queue bound to their
  types, and ``emitted_copies`` (the outbox is at least once: its sweeper publishes again a row
  whose deletion lagged past the grace period; consumers drop copies by source and id).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import runner
from bench.feed import EventFeed
from bench.floor.run import run_floor
from bench.runner import log
from bench.workloads import WORKLOADS
from orchestrator.api.schema import MAX_BATCH_STARTS


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workload", choices=sorted(WORKLOADS), default="order-3", help="which saga to run"
    )
    parser.add_argument("--sagas", type=int, default=2000, help="concurrent mode: instances")
    parser.add_argument("--sequential", type=int, default=200, help="sequential mode: instances")
    parser.add_argument("--warmup", type=int, default=50, help="instances run before measuring")
    parser.add_argument("--in-flight", type=int, default=32, help="concurrent start requests")
    parser.add_argument(
        "--start-batch",
        type=int,
        default=1,
        help="starts per request (more than 1: POST /v1/sagas/{name}/batch)",
    )
    parser.add_argument("--orchestrators", type=int, choices=(1, 2), default=1)
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1, help="per pool")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="warren worker --concurrency (its default)"
    )
    parser.add_argument(
        "--count-sagas", type=int, default=0, help="approximate commits per saga (pg_stat)"
    )
    parser.add_argument("--scaling", action="store_true", help="concurrent mode, 4 combinations")
    parser.add_argument("--quick", action="store_true", help="200 concurrent, 20 sequential")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mode")
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks of each process here")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs in this directory")
    parser.add_argument(
        "--floor", action="store_true", help="run the floor (bench/floor) too, and compare"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.start_batch <= MAX_BATCH_STARTS:
        parser.error(f"--start-batch takes 1 to {MAX_BATCH_STARTS}")
    if args.quick:
        args.sagas, args.sequential, args.warmup, args.count_sagas = 200, 20, 10, 0
    if args.count_sagas and WORKLOADS[args.workload].awaited_event is not None:
        # The event feed's own queries would count as the saga's commits.
        parser.error(f"--count-sagas does not apply to --workload {args.workload}")
    if args.floor and args.workload != "order-3":
        parser.error("--floor is the order-3 shape: it compares with --workload order-3 only")
    return args


async def _measure(
    stack: runner.Stack,
    args: argparse.Namespace,
    *,
    sequential: int,
    count_sagas: int,
    with_machine: bool,
) -> dict[str, Any]:
    await stack.wait_ready()
    db = await asyncpg.connect(stack.database_url.replace("+asyncpg", ""))
    feed = EventFeed(stack) if stack.workload.awaited_event is not None else None
    try:
        if feed is not None:
            await feed.open()
        figures: dict[str, Any] = {}
        if with_machine:
            figures["machine"] = runner.machine_info(*await runner.postgres_of(db))
        figures["config"] = {
            "orchestrators": stack.orchestrators,
            "workers_per_pool": stack.workers_per_pool,
            "worker_concurrency": "default" if stack.concurrency is None else stack.concurrency,
            "pools": list(stack.workload.pools),
            "start_requests_in_flight": args.in_flight,
            "starts_per_request": args.start_batch,
            "warmup_sagas": args.warmup,
        }
        offset = 0
        if args.warmup:
            log(f"warm-up: {args.warmup} sagas")
            await runner.run_concurrent(
                stack,
                db,
                args.warmup,
                args.in_flight,
                args.timeout,
                feed=feed,
                batch=args.start_batch,
            )
            offset += args.warmup
        if args.sagas:  # --sagas 0: one at a time only (e.g. to profile a hop)
            figures["concurrent"] = await _concurrent(stack, db, args, offset, feed)
            offset += args.sagas
        if sequential:
            # With --sagas 0, --profile profiles the one-at-a-time run.
            profile = None if args.sagas else args.profile
            async with runner.profiling(stack, profile, args.profile_rate):
                figures["sequential"] = await _sequential(
                    stack, db, sequential, offset, args.timeout, feed
                )
            offset += sequential
        if count_sagas:
            figures["round_trips"] = await _count_transactions(stack, db, count_sagas, offset)
        figures["peak_rss_mb"] = {k: round(v, 1) for k, v in stack.peak_rss_mb().items()}
        return figures
    finally:
        if feed is not None:
            await feed.close()
        await db.close()


async def _concurrent(
    stack: runner.Stack,
    db: asyncpg.Connection,
    args: argparse.Namespace,
    offset: int,
    feed: EventFeed | None,
) -> dict[str, Any]:
    async with runner.profiling(stack, args.profile, args.profile_rate):
        log(
            f"concurrent: {args.sagas} sagas, {args.in_flight} start requests in flight, "
            f"{args.start_batch} starts per request"
        )
        cpu_before = stack.cpu_by_kind()
        outcome, accepted = await runner.run_concurrent(
            stack, db, args.sagas, args.in_flight, args.timeout, offset, feed, args.start_batch
        )
        cpu_after = stack.cpu_by_kind()
    rows = await runner.instance_rows(db, outcome.ids)
    span = (max(r["updated_at"] for r in rows) - min(r["created_at"] for r in rows)).total_seconds()
    wall = outcome.all_terminal - outcome.first_start
    n = len(outcome.ids)
    cpu = {kind: cpu_after[kind] - cpu_before[kind] for kind in cpu_after}
    commands = await runner.commands_dispatched(db, outcome.ids)
    result: dict[str, Any] = {
        "sagas": n,
        **runner.check_statuses(stack.workload, outcome.ids, rows, offset),
        "sagas_per_second": round(n / span, 1),
        "client_sagas_per_second": round(n / wall, 1),
        "starts_per_second": round(n / (accepted - outcome.first_start), 1),
        "wall_seconds": round(wall, 2),
        "end_to_end": runner.summary_ms(runner.end_to_end(rows)),
        "steps": await runner.step_latencies(db, outcome.ids),
        "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_ms_per_saga": {k: round(v / n * 1000, 3) for k, v in cpu.items()},
        "cpu_ms_per_saga_total": round(sum(cpu.values()) / n * 1000, 3),
        "commands_per_saga": round(commands / n, 2),
        "cpu_ms_per_command_total": round(sum(cpu.values()) / commands * 1000, 3),
        "cpu_share_of_machine_percent": {
            k: round(v / wall / (os.cpu_count() or 1) * 100, 1) for k, v in cpu.items()
        },
    }
    if feed is not None:
        result["events"] = await feed.figures(db, outcome.ids, offset)
    log(
        f"concurrent: {result['sagas_per_second']} sagas/s, "
        f"p50 {result['end_to_end']['p50_ms']} ms, statuses {result['statuses']}"
    )
    return result


async def _sequential(
    stack: runner.Stack,
    db: asyncpg.Connection,
    sagas: int,
    offset: int,
    limit: float,
    feed: EventFeed | None,
) -> dict[str, Any]:
    log(f"sequential: {sagas} sagas one at a time")
    outcome, client = await runner.run_sequential(stack, db, sagas, offset, limit, feed)
    rows = await runner.instance_rows(db, outcome.ids)
    result: dict[str, Any] = {
        "sagas": len(outcome.ids),
        **runner.check_statuses(stack.workload, outcome.ids, rows, offset),
        "end_to_end": runner.summary_ms(runner.end_to_end(rows)),
        "client_end_to_end": runner.summary_ms(client),
        "steps": await runner.step_latencies(db, outcome.ids),
    }
    first = stack.workload.event_first
    if feed is not None and first is not None:
        # Those whose event came first wait for nothing; the others for the benchmark to see
        # the wait begin (polled every ms) and publish.
        n_of = {instance_id: offset + k for k, instance_id in enumerate(outcome.ids)}
        result["end_to_end_event_first"] = runner.summary_ms(
            runner.end_to_end([r for r in rows if first(n_of[r["id"]])])
        )
        result["end_to_end_event_after"] = runner.summary_ms(
            runner.end_to_end([r for r in rows if not first(n_of[r["id"]])])
        )
        result["events"] = await feed.figures(db, outcome.ids, offset)
    log(f"sequential: p50 {result['end_to_end']['p50_ms']} ms")
    return result


async def _count_transactions(
    stack: runner.Stack, db: asyncpg.Connection, sagas: int, offset: int
) -> dict[str, Any]:
    """Commits per saga in the scratch database, one saga at a time, our own queries excluded:
    we wait a fixed time per saga instead of polling, and subtract the idle background rate
    (sweepers, timer and breaker loops)."""
    pause = 0.3
    log(f"counting transactions: {sagas} sagas, {pause}s apart")
    await asyncio.sleep(1.5)
    idle_start = await runner.transactions_committed(db)
    await asyncio.sleep(sagas * pause)
    await asyncio.sleep(1.5)  # backends report their counts at most once a second
    idle = await runner.transactions_committed(db) - idle_start - 1
    before = await runner.transactions_committed(db)
    ids = []
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30.0) as http:
        for k in range(sagas):
            ids.append(await runner.start_saga(http, stack.workload, offset + k))
            await asyncio.sleep(pause)
    await asyncio.sleep(1.5)
    busy = await runner.transactions_committed(db) - before - 1
    rows = await runner.instance_rows(db, ids)
    completed = sum(1 for r in rows if r["status"] == "completed")
    compensated = sum(1 for r in rows if r["status"] == "compensated")
    return {
        "sagas": sagas,
        "statuses": {"completed": completed, "compensated": compensated},
        "idle_commits_in_same_time": idle,
        "commits_per_saga": round((busy - idle) / sagas, 2),
    }


def _run_config(
    args: argparse.Namespace,
    orchestrators: int,
    workers: int,
    *,
    sequential: int,
    count_sagas: int,
    with_machine: bool,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="warren-bench-") as tmp:
        log_dir = args.logs or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        with runner.scratch_servers() as (database_url, amqp_url):
            stack = runner.Stack(
                database_url,
                amqp_url,
                log_dir,
                orchestrators=orchestrators,
                workers_per_pool=workers,
                concurrency=args.concurrency,
                workload=WORKLOADS[args.workload],
            )
            with runner.running_stack(stack):
                return asyncio.run(
                    _measure(
                        stack,
                        args,
                        sequential=sequential,
                        count_sagas=count_sagas,
                        with_machine=with_machine,
                    )
                )


def _run_floor(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="warren-floor-") as tmp:
        log_dir = args.logs or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        return run_floor(args.sagas, args.warmup, args.timeout, log_dir)


def _compare(floor: dict[str, Any], warren_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Both throughputs and CPU per saga, and Warren's throughput as a fraction of the floor's
    (one entry per Warren run: with --scaling, one per configuration)."""
    ratios = [round(run["sagas_per_second"] / floor["sagas_per_second"], 3) for run in warren_runs]
    comparison: dict[str, Any] = {
        "floor_sagas_per_second": floor["sagas_per_second"],
        "warren_sagas_per_second": [run["sagas_per_second"] for run in warren_runs],
        "warren_to_floor": ratios if len(ratios) > 1 else ratios[0],
        "cpu_ms_per_saga_floor": floor["cpu_ms_per_saga"],
        "cpu_ms_per_saga_warren": [run["cpu_ms_per_saga"] for run in warren_runs],
        "floor_duplicate_effects": floor["effects"]["duplicates"],
        "floor_missing_effects": floor["effects"]["missing"],
    }
    if len(warren_runs) == 1:
        comparison["warren_sagas_per_second"] = warren_runs[0]["sagas_per_second"]
        comparison["cpu_ms_per_saga_warren"] = warren_runs[0]["cpu_ms_per_saga"]
    log(
        f"floor {floor['sagas_per_second']} sagas/s, Warren "
        f"{comparison['warren_sagas_per_second']} sagas/s: warren_to_floor {ratios}"
    )
    return comparison


def _terminate(signum: int, frame: object) -> None:
    # Treat SIGTERM as Ctrl-C: inside asyncio.run that cancels the measuring task cleanly, and
    # the clean-up (stop the processes, drop the database and vhost) runs in `finally` blocks.
    signal.raise_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started ignoring it
    signal.signal(signal.SIGTERM, _terminate)
    started = time.time()
    output: dict[str, Any] = {"workload": args.workload, "note": _NOTE}
    if args.floor:
        output["floor"] = _run_floor(args)
    if args.scaling:
        output["scaling"] = []
        for orchestrators in (1, 2):
            for workers in (1, 2):
                figures = _run_config(
                    args,
                    orchestrators,
                    workers,
                    sequential=0,
                    count_sagas=0,
                    with_machine="machine" not in output,
                )
                if "machine" in figures:
                    output["machine"] = figures.pop("machine")
                output["scaling"].append(figures)
    else:
        figures = _run_config(
            args,
            args.orchestrators,
            args.workers,
            sequential=args.sequential,
            count_sagas=args.count_sagas,
            with_machine=True,
        )
        output["machine"] = figures.pop("machine")
        output.update(figures)
    if args.floor:
        runs = [row["concurrent"] for row in output["scaling"]] if args.scaling else None
        output["comparison"] = _compare(output["floor"], runs or [output["concurrent"]])
    output["bench_seconds"] = round(time.time() - started, 1)
    json.dump(output, sys.stdout, indent=2, default=str)
    print()
    return 0


_NOTE = (
    "Latencies from database timestamps; CPU of postgres and rabbitmq is machine-wide; "
    "see `python -m bench --help` and bench/__main__.py for what each figure measures."
)

if __name__ == "__main__":
    sys.exit(main())
