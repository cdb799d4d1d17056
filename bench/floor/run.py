"""Run and measure the floor: its two processes on a scratch database and vhost of their own.

The figures mean what Warren's do in bench/__main__.py: ``sagas_per_second`` is sagas / (first
saga row's ``created_at`` -> last ``updated_at``), both from the database; ``cpu_ms_per_saga``
is each process kind's utime+stime over the measured run (Postgres and RabbitMQ machine-wide).
``effects`` counts the ledger: ``duplicates`` (rows beyond one per saga and step) and
``missing`` (steps of a started saga with no row) must both be 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from bench import runner
from bench.floor import pipeline
from bench.runner import ROOT, log

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

READY_SECONDS = 60.0


@dataclass
class FloorProc:
    kind: str
    popen: subprocess.Popen[str]
    log_path: Path

    def alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"the floor's {self.kind} exited with {self.popen.returncode}:\n"
                f"{self.log_path.read_text(errors='replace')[-4000:]}"
            )

    def wait_ready(self, limit: float = READY_SECONDS) -> None:
        """Until the process prints ``ready`` (it consumes its queue)."""
        assert self.popen.stdout is not None
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.popen.stdout], [], [], 0.5)
            if readable:
                line = self.popen.stdout.readline()
                if line.strip() == "ready":
                    return
            self.alive()
        raise TimeoutError(f"the floor's {self.kind} was not ready within {limit}s")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def floor_processes(database_url: str, amqp_url: str, log_dir: Path) -> Iterator[list[FloorProc]]:
    """The worker and the orchestrator, ready; stopped on the way out (SIGTERM, then SIGKILL)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    procs: list[FloorProc] = []
    try:
        for kind in ("worker", "orchestrator"):
            log_path = log_dir / f"floor-{kind}.log"
            with log_path.open("w") as log_file:
                popen = subprocess.Popen(  # noqa: S603 - our own command line
                    [sys.executable, "-m", f"bench.floor.{kind}", database_url, amqp_url],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                    text=True,
                    cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": path},
                    start_new_session=True,
                )
            procs.append(FloorProc(kind, popen, log_path))
        for proc in procs:
            proc.wait_ready()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def run_floor(sagas: int, warmup: int, limit: float, log_dir: Path) -> dict[str, Any]:
    """Start the floor on fresh scratch servers, run `warmup` then `sagas` sagas at once; the
    figures. The database and vhost are dropped at the end, also on failure."""
    with runner.scratch_servers() as (database_url, amqp_url):
        dsn = database_url.replace("+asyncpg", "")
        asyncio.run(create_schema(dsn))
        log("floor: starting its worker and orchestrator")
        with floor_processes(dsn, amqp_url, log_dir) as procs:
            figures = asyncio.run(_measure(procs, dsn, sagas, warmup, limit))
        figures["database"] = dsn.rsplit("/", 1)[1]
        return figures


async def create_schema(dsn: str) -> None:
    db = await asyncpg.connect(dsn)
    try:
        await db.execute(pipeline.SCHEMA)
    finally:
        await db.close()


async def _measure(
    procs: list[FloorProc], dsn: str, sagas: int, warmup: int, limit: float
) -> dict[str, Any]:
    db = await asyncpg.connect(dsn)
    try:
        if warmup:
            log(f"floor: warm-up, {warmup} sagas")
            await run_sagas(procs, db, warmup, 0, limit)
        log(f"floor: {sagas} sagas at once")
        load = [round(x, 2) for x in os.getloadavg()]
        cpu_before = _cpu_by_kind(procs)
        first_sent = time.perf_counter()
        all_seen = await run_sagas(procs, db, sagas, warmup, limit)
        cpu = {k: v - cpu_before[k] for k, v in _cpu_by_kind(procs).items()}
        figures = await _figures(db, sagas, warmup, started_with=warmup + sagas)
    finally:
        await db.close()
    figures["loadavg_at_start"] = load
    figures["wall_seconds"] = round(all_seen - first_sent, 2)
    figures["cpu_seconds"] = {k: round(v, 2) for k, v in cpu.items()}
    figures["cpu_ms_per_saga"] = {k: round(v / sagas * 1000, 3) for k, v in cpu.items()}
    figures["cpu_ms_per_saga_total"] = round(sum(cpu.values()) / sagas * 1000, 3)
    log(
        f"floor: {figures['sagas_per_second']} sagas/s, statuses {figures['statuses']}, "
        f"duplicate effects {figures['effects']['duplicates']}"
    )
    return figures


async def run_sagas(
    procs: list[FloorProc], db: asyncpg.Connection, count: int, first: int, limit: float
) -> float:
    """Ask the orchestrator to start sagas first..first+count-1; when all were seen completed
    (perf_counter), polling every 20 ms."""
    orchestrator = next(p for p in procs if p.kind == "orchestrator")
    assert orchestrator.popen.stdin is not None
    orchestrator.popen.stdin.write(f"start {count} {first}\n")
    orchestrator.popen.stdin.flush()
    query = "SELECT count(*) FROM floor.sagas WHERE status = 'completed' AND id >= $1 AND id < $2"
    started = time.perf_counter()
    last_report = started
    while True:
        done = await db.fetchval(query, first, first + count)
        now = time.perf_counter()
        if done >= count:
            return now
        if now - started > limit:
            raise TimeoutError(f"floor: only {done} of {count} sagas completed within {limit}s")
        if now - last_report > 5:
            for proc in procs:
                proc.alive()
            log(f"floor: {done}/{count} completed")
            last_report = now
        await asyncio.sleep(0.02)


def _cpu_by_kind(procs: list[FloorProc]) -> dict[str, float]:
    own = {proc.kind: runner.process_cpu_seconds(proc.popen.pid) for proc in procs}
    return {**own, **runner.servers_cpu_seconds()}


EFFECTS = f"""
SELECT count(*) AS rows,
       count(*) - count(DISTINCT (saga_id, step)) AS duplicates,
       (SELECT count(*) FROM floor.sagas) * {pipeline.STEPS}
           - count(DISTINCT (saga_id, step)) AS missing
FROM floor.ledger
"""  # noqa: S608 - a constant


async def _figures(
    db: asyncpg.Connection, sagas: int, first: int, started_with: int
) -> dict[str, Any]:
    rows = await db.fetch(
        "SELECT status, created_at, updated_at FROM floor.sagas WHERE id >= $1 AND id < $2",
        first,
        first + sagas,
    )
    span = (max(r["updated_at"] for r in rows) - min(r["created_at"] for r in rows)).total_seconds()
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    effects = dict(await db.fetchrow(EFFECTS))
    return {
        "sagas": sagas,
        "sagas_started_with_warmup": started_with,
        "statuses": statuses,
        "sagas_per_second": round(sagas / span, 1),
        "end_to_end": runner.summary_ms(runner.end_to_end(rows)),
        "effects": effects,
        "batch_limit": pipeline.BATCH,
    }
