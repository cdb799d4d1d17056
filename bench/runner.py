"""The machinery of the saga benchmark: scratch servers, Warren's processes, measurements.

Everything here is synchronous at the edges (creating and dropping the scratch database and
vhost, starting and stopping processes) so that clean-up runs in plain `finally` blocks, even on
Ctrl-C; only the measuring itself is async.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from bench.workloads import WORKLOADS, Workload
from orchestrator.config import Settings
from tests.support.probes import QueueProbe, answers
from tests.support.processes import Proc, Processes, all_alive, free_port, run_warren, settings_env
from tests.support.services import Servers
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence
    from datetime import datetime

    import asyncpg

    from bench.feed import EventFeed

SERVERS = Servers.from_env("BENCH_")
"""BENCH_POSTGRES, BENCH_AMQP and BENCH_RABBITMQCTL say where the servers are."""
ROOT = Path(__file__).resolve().parent.parent
TERMINAL = ("completed", "compensated", "failed")
NAMESPACE = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    """Progress goes to stderr; stdout is for the JSON figures only."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- scratch database and vhost (the tests' helpers) --------------------------------------


@contextlib.contextmanager
def scratch_servers() -> Iterator[tuple[str, str]]:
    """A fresh database and a fresh vhost, both removed on the way out: (database URL, AMQP URL)."""
    name = f"warren_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    log(f"creating database and vhost {name}")
    SERVERS.run_admin(f'CREATE DATABASE "{name}"')
    try:
        amqp_url = SERVERS.create_vhost(name)
        try:
            yield SERVERS.database_url(name), amqp_url
        finally:
            with contextlib.suppress(Exception):
                SERVERS.delete_vhost(name)
    finally:
        SERVERS.run_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log(f"dropped database and vhost {name}")


# ---- Warren's processes (the tests' Processes) ----------------------------------------------


@dataclass
class Stack:
    """api + orchestrators + workers (per pool) as OS processes on one scratch database, with
    Warren's default settings."""

    database_url: str
    amqp_url: str
    log_dir: Path
    orchestrators: int = 1
    workers_per_pool: int = 1
    concurrency: int | None = None
    """warren worker --concurrency; None: Warren's default."""
    workload: Workload = WORKLOADS["order-3"]
    settings: Settings = field(init=False)
    processes: Processes = field(init=False)

    def __post_init__(self) -> None:
        self.settings = Settings(
            database_url=self.database_url,
            amqp_url=self.amqp_url,
            namespace=NAMESPACE,
            api_port=free_port(),
        )
        # The workers import the workload's module (bench.*) from the repository.
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        self.processes = Processes(self.settings, self.log_dir, env={"PYTHONPATH": path})

    @property
    def procs(self) -> list[Proc]:
        return self.processes.procs

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    def run_once(self, *args: str) -> None:
        env = {**settings_env(self.settings), **self.processes.env}
        done = run_warren(env, *args, timeout=120, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"warren {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    def spawn(self, name: str, *args: str) -> Proc:
        # Each process serves its metrics on a port of its own, as in production.
        return self.processes.start(
            name, *args, env={"WARREN_METRICS_PORT": str(free_port())}, cwd=ROOT
        )

    def start(self) -> None:
        log("warren migrate, register")
        self.run_once("migrate")
        self.run_once("register", self.workload.saga_ref)
        log(
            f"starting api, {self.orchestrators} orchestrator(s), "
            f"{self.workers_per_pool} worker(s) per pool {', '.join(self.workload.pools)}"
        )
        self.spawn("api", "api")
        for i in range(self.orchestrators):
            self.spawn(f"orchestrator-{i + 1}", "orchestrator")
        concurrency = () if self.concurrency is None else ("--concurrency", str(self.concurrency))
        for pool in self.workload.pools:
            for i in range(self.workers_per_pool):
                self.spawn(
                    f"worker-{pool}-{i + 1}",
                    "worker",
                    "--app",
                    self.workload.worker_ref,
                    "--pool",
                    pool,
                    *concurrency,
                )

    def stop(self) -> None:
        self.processes.terminate_all(grace=15)

    def check_alive(self) -> None:
        all_alive(self.procs)()

    async def wait_ready(self, limit: float = 60.0) -> None:
        topology = self.settings.topology
        wanted = {topology.orchestrator_queue: self.orchestrators}
        wanted.update(
            {topology.pool_queue(pool): self.workers_per_pool for pool in self.workload.pools}
        )
        if self.workload.awaited_event is not None:
            # An orchestrator binds its events queue before it consumes from it: once every
            # one consumes, events of the types the definitions await are routed to them.
            wanted[topology.events_queue] = self.orchestrators
        alive = all_alive(self.procs)
        async with httpx.AsyncClient(base_url=self.api_url, timeout=5.0) as http:
            await wait_for(
                lambda: answers(http, "/health/ready"),
                timeout=limit,
                what="the API to be ready",
                alive=alive,
            )
        queues = QueueProbe(self.amqp_url)
        try:
            for queue, count in wanted.items():
                await queues.wait_consumers(queue, count, timeout=limit, alive=alive)
        finally:
            await queues.close()

    def peak_rss_mb(self) -> dict[str, float]:
        return {proc.name: _vm_hwm_kb(proc.pid) / 1024 for proc in self.procs if proc.running}

    def cpu_by_kind(self) -> dict[str, float]:
        """CPU seconds by kind of process: api, orchestrator, worker (the name's first word)."""
        totals: dict[str, float] = {}
        for proc in self.procs:
            kind = proc.name.split("-", 1)[0]
            totals[kind] = totals.get(kind, 0.0) + process_cpu_seconds(proc.pid)
        return {**totals, **servers_cpu_seconds()}


@contextlib.contextmanager
def running_stack(stack: Stack) -> Iterator[Stack]:
    try:
        stack.start()
        yield stack
    except BaseException:
        log(f"log tails of Warren's processes:\n{stack.processes.logs()}")
        raise
    finally:
        stack.stop()


# ---- /proc ----------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces: fields start after its closing parenthesis
    return raw[raw.rindex(")") + 2 :].split()


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process plus cutime + cstime of its reaped children."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _tree_cpu_seconds(pid: int) -> float:
    total = _cpu_seconds(pid)
    with contextlib.suppress(OSError):
        for child in _children(pid):
            total += _tree_cpu_seconds(child)
    return total


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children, reaped or not."""
    return _tree_cpu_seconds(pid)


def servers_cpu_seconds() -> dict[str, float]:
    """CPU seconds of the Postgres and RabbitMQ servers (machine-wide: see below)."""
    return {
        "postgres": _server_cpu_seconds(5432, "postgres"),
        "rabbitmq": _server_cpu_seconds(5672, "beam.smp"),
    }


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    return inodes


def _server_pids(port: int, comm: str) -> list[int]:
    """The process(es) named `comm` listening on `port` (the server, not its CLI tools)."""
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != comm:
                continue
            links = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
        except OSError:
            continue
        if links & sockets:
            found.append(int(entry.name))
    return found


def _server_cpu_seconds(port: int, comm: str) -> float:
    """CPU of the server listening on `port` and all its children (for Postgres: every backend,
    also those that exited meanwhile, counted in the postmaster's cutime/cstime). Machine-wide:
    the work of other databases or vhosts on the same server counts too."""
    return sum(_tree_cpu_seconds(pid) for pid in _server_pids(port, comm))


def _vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(values: Sequence[float]) -> dict[str, float | int | None]:
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 2)

    return {
        "count": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p90_ms": ms(percentile(values, 90)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(max(values) if values else None),
    }


# ---- starting and waiting ------------------------------------------------------------------


class StartFailed(RuntimeError):
    pass


async def _post(http: httpx.AsyncClient, path: str, **kwargs: Any) -> httpx.Response:
    """POST as a careful client does: sent again (up to three times in all) when the
    connection broke, as a keep-alive connection the server closed can as it is reused; the
    idempotency keys of the starts make that safe."""
    for _ in range(2):
        with contextlib.suppress(httpx.TransportError):
            return await http.post(path, **kwargs)
    return await http.post(path, **kwargs)


async def start_saga(http: httpx.AsyncClient, workload: Workload, n: int) -> str:
    """Start one saga, with an idempotency key."""
    key = {"Idempotency-Key": f"bench-{n}"}
    response = await _post(
        http, f"/v1/sagas/{workload.saga_name}", json={"input": workload.input(n)}, headers=key
    )
    if response.status_code not in (200, 201):
        raise StartFailed(f"start {n}: HTTP {response.status_code}: {response.text[:500]}")
    instance_id: str = response.json()["id"]
    return instance_id


async def start_sagas(http: httpx.AsyncClient, workload: Workload, ns: list[int]) -> list[str]:
    """Start several sagas in one request (`POST /v1/sagas/{name}/batch`), each with its
    idempotency key."""
    body = {"starts": [{"input": workload.input(n), "idempotency_key": f"bench-{n}"} for n in ns]}
    response = await _post(http, f"/v1/sagas/{workload.saga_name}/batch", json=body)
    if response.status_code != 200:
        raise StartFailed(f"starts {ns[0]}..: HTTP {response.status_code}: {response.text[:500]}")
    ids = []
    for n, result in zip(ns, response.json()["results"], strict=True):
        if result["status"] not in (200, 201):
            raise StartFailed(f"start {n}: {result['status']}: {result['problem']}")
        ids.append(result["instance"]["id"])
    return ids


async def count_terminal(db: asyncpg.Connection) -> int:
    value = await db.fetchval(
        "SELECT count(*) FROM warren.instances WHERE status = ANY($1::text[])", list(TERMINAL)
    )
    return int(value)


@dataclass
class Outcome:
    """Instance ids started, in order (the index is the workload's n), and client timings."""

    ids: list[str]
    first_start: float
    """perf_counter when the first start request was sent"""
    all_terminal: float
    """perf_counter when every instance was seen terminal"""


async def run_concurrent(
    stack: Stack,
    db: asyncpg.Connection,
    sagas: int,
    in_flight: int,
    limit: float,
    offset: int = 0,
    feed: EventFeed | None = None,
    batch: int = 1,
) -> tuple[Outcome, float]:
    """Start `sagas` instances with at most `in_flight` requests at once, `batch` starts per
    request; wait for all to end. Returns the outcome and the time (perf_counter) when every
    start had been accepted. With a `feed`, each instance's event is published before it
    starts or once it waits."""
    ids: list[str | None] = [None] * sagas
    # Shared by the starters: each takes the next chunk of n.
    counter = iter([list(range(at, min(at + batch, sagas))) for at in range(0, sagas, batch)])
    before = await count_terminal(db)
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60.0, limits=limits) as http:

        async def starter() -> None:
            for chunk in counter:
                if feed is not None:
                    for n in chunk:
                        await feed.before_start(offset + n)
                if batch == 1:
                    ids[chunk[0]] = await start_saga(http, stack.workload, offset + chunk[0])
                    continue
                started = await start_sagas(http, stack.workload, [offset + n for n in chunk])
                for n, instance_id in zip(chunk, started, strict=True):
                    ids[n] = instance_id

        stop = asyncio.Event()
        watcher = asyncio.create_task(feed.watch(stop)) if feed is not None else None
        try:
            first = time.perf_counter()
            await asyncio.gather(*(starter() for _ in range(in_flight)))
            accepted = time.perf_counter()
            log(f"{sagas} starts accepted in {accepted - first:.2f}s; waiting for the ends")
            now = await _wait_terminal(stack, db, sagas, before, (first, limit), watcher)
        finally:
            stop.set()
            if watcher is not None:
                await watcher
    return Outcome([i for i in ids if i is not None], first, now), accepted


async def _wait_terminal(
    stack: Stack,
    db: asyncpg.Connection,
    sagas: int,
    before: int,
    since: tuple[float, float],
    watcher: asyncio.Task[None] | None,
) -> float:
    """Poll until `sagas` more instances are terminal than `before`, for at most `since`'s
    limit after its start (perf_counter); when that was seen."""
    first, limit = since
    deadline = first + limit
    last_report = 0.0
    while True:
        done = await count_terminal(db) - before
        now = time.perf_counter()
        if done >= sagas:
            return now
        if now > deadline:
            raise TimeoutError(f"only {done} of {sagas} sagas ended within {limit}s")
        if watcher is not None and watcher.done():
            watcher.result()  # the event feed failed: say why
            raise RuntimeError("the event feed stopped")
        if now - last_report > 5:
            stack.check_alive()
            log(f"{done}/{sagas} terminal")
            last_report = now
        await asyncio.sleep(0.02)


async def run_sequential(
    stack: Stack,
    db: asyncpg.Connection,
    sagas: int,
    offset: int,
    limit: float,
    feed: EventFeed | None = None,
) -> tuple[Outcome, list[float]]:
    """One saga at a time: start, poll its status every 1 ms until terminal, next.
    Returns the outcome and the client-side latencies (request sent -> terminal seen).
    With a `feed`, each instance's event is published before it starts or once it waits."""
    poll = await db.prepare("SELECT status FROM warren.instances WHERE id = $1::uuid")
    ids: list[str] = []
    client: list[float] = []
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30.0) as http:
        first = time.perf_counter()
        for k in range(sagas):
            if feed is not None:
                await feed.before_start(offset + k)
            sent = time.perf_counter()
            instance_id = await start_saga(http, stack.workload, offset + k)
            if feed is not None:
                await feed.publish_when_waiting(offset + k, limit)
            while (await poll.fetchval(instance_id)) not in TERMINAL:
                if time.perf_counter() - sent > limit:
                    raise TimeoutError(f"saga {instance_id} did not end within {limit}s")
                await asyncio.sleep(0.001)
            client.append(time.perf_counter() - sent)
            ids.append(instance_id)
    return Outcome(ids, first, time.perf_counter()), client


# ---- figures from the database ----------------------------------------------------------------


async def instance_rows(db: asyncpg.Connection, ids: list[str]) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT id::text AS id, status, created_at, updated_at FROM warren.instances "
        "WHERE id = ANY($1::uuid[])",
        ids,
    )
    return rows


def check_statuses(
    workload: Workload, ids: list[str], rows: list[asyncpg.Record], offset: int = 0
) -> dict[str, Any]:
    """Counts by status, and how many instances ended other than the workload expects."""
    by_id = {row["id"]: row["status"] for row in rows}
    counts: dict[str, int] = {}
    unexpected = 0
    for k, instance_id in enumerate(ids):
        status = by_id.get(instance_id, "missing")
        counts[status] = counts.get(status, 0) + 1
        if status != workload.expected_status(offset + k):
            unexpected += 1
    return {"statuses": dict(sorted(counts.items())), "unexpected": unexpected}


async def commands_dispatched(db: asyncpg.Connection, ids: list[str]) -> int:
    """Commands the instances sent (steps and compensations, every attempt): the unit for
    comparing the CPU of workloads of different sizes."""
    value = await db.fetchval(
        "SELECT count(*) FROM warren.history WHERE instance_id = ANY($1::uuid[]) "
        "AND type IN ('step_dispatched', 'compensation_dispatched')",
        ids,
    )
    return int(value)


def end_to_end(rows: list[asyncpg.Record]) -> list[float]:
    return [(row["updated_at"] - row["created_at"]).total_seconds() for row in rows]


STEP_QUERY = """
SELECT h.instance_id::text AS instance_id, h.seq, h.type, h.step, h.phase,
       h.recorded_at AS decided_at, r.recorded_at AS consumed_at
FROM warren.history h
LEFT JOIN warren.step_results r
  ON r.consumer = 'pool:' || h.pool
 AND r.idempotency_key = h.instance_id::text || ':' || h.step || ':' || h.phase
WHERE h.instance_id = ANY($1::uuid[])
  AND h.type IN ('step_dispatched', 'compensation_dispatched', 'wait_started')
ORDER BY h.instance_id, h.seq
"""


async def step_latencies(db: asyncpg.Connection, ids: list[str]) -> dict[str, Any]:
    """Per step hand-over, from database timestamps (see docs in bench/__main__.py):

    - step_to_step: worker transaction start of command k -> of command k+1 (command consumed
      to next command consumed; includes the worker's handler+commit+reply publish, the
      orchestrator's transaction and command publish, and both deliveries);
    - orchestrator_to_worker: the orchestrator's decision to dispatch command k+1 (history
      recorded_at, taken inside the reply's transaction) -> the worker's transaction start for
      it: the orchestrator's commit + outbox publish/confirm + delivery to the worker;
    - worker_to_orchestrator: worker transaction start of command k -> the orchestrator's
      decision on its reply: the worker's handler+commit+reply publish + delivery + the
      orchestrator's inbox claim and row lock;
    - api_to_worker: the API's decision to dispatch the first command -> its consumption.

    Across a wait for an event (`WaitFor`) only orchestrator_to_worker counts (from the
    decision taken as the event was applied): the rest lasts until the event comes.
    """
    rows = await db.fetch(STEP_QUERY, ids)
    cycle: list[float] = []
    hop_out: list[float] = []
    hop_back: list[float] = []
    first_hop: list[float] = []
    previous: asyncpg.Record | None = None
    waited: str | None = None  # the instance whose wait began since its last command
    for row in rows:
        if row["type"] == "wait_started":
            previous, waited = None, row["instance_id"]
            continue
        same = previous is not None and previous["instance_id"] == row["instance_id"]
        consumed: datetime | None = row["consumed_at"]
        if consumed is not None:
            gap = (consumed - row["decided_at"]).total_seconds()
            resumed = waited == row["instance_id"]  # dispatched as the event was applied
            (hop_out if same or resumed else first_hop).append(gap)
        waited = None
        if same and previous is not None and previous["consumed_at"] is not None:
            hop_back.append((row["decided_at"] - previous["consumed_at"]).total_seconds())
            if consumed is not None:
                cycle.append((consumed - previous["consumed_at"]).total_seconds())
        previous = row
    return {
        "step_to_step": summary_ms(cycle),
        "orchestrator_to_worker": summary_ms(hop_out),
        "worker_to_orchestrator": summary_ms(hop_back),
        "api_to_worker": summary_ms(first_hop),
    }


async def transactions_committed(db: asyncpg.Connection) -> int:
    value = await db.fetchval(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )
    return int(value)


# ---- the machine ----------------------------------------------------------------------------


REPORTED_SETTINGS = ("fsync", "synchronous_commit", "shared_buffers", "max_connections")
"""The Postgres settings a benchmark report states."""


async def postgres_of(
    db: asyncpg.Connection, settings: Sequence[str] = REPORTED_SETTINGS
) -> tuple[str, dict[str, str]]:
    """The server's version, and its `settings` by name (for `machine_info`)."""
    version: str = await db.fetchval("SHOW server_version")
    return version, {name: await db.fetchval(f"SHOW {name}") for name in settings}


def machine_info(pg_version: str, pg_settings: dict[str, str]) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        rabbit = SERVERS.rabbitmqctl("version")
    except (RuntimeError, subprocess.SubprocessError):
        rabbit = "unknown"
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": pg_version,
        "postgres_settings": pg_settings,
        "rabbitmq": rabbit,
        "git_commit": commit + ("-dirty" if dirty else ""),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


# ---- profiling (optional: needs py-spy) -------------------------------------------------------


def start_profilers(stack: Stack, out_dir: Path, rate: int) -> list[subprocess.Popen[bytes]]:
    """py-spy on every Warren process, collapsed stacks (`--format raw`) into out_dir."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    spies = []
    for proc in stack.procs:
        target = out_dir / f"{proc.name}.txt"
        spies.append(
            subprocess.Popen(  # noqa: S603 - our own command line
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--rate",
                    str(rate),
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(target),
                ],
                stdout=subprocess.DEVNULL,
                stderr=(out_dir / f"{proc.name}.py-spy.log").open("wb"),
            )
        )
    return spies


@contextlib.asynccontextmanager
async def profiling(stack: Stack, out_dir: Path | None, rate: int) -> AsyncIterator[None]:
    """py-spy on every Warren process while the block runs; nothing when `out_dir` is None."""
    if out_dir is None:
        yield
        return
    spies = start_profilers(stack, out_dir, rate)
    try:
        await asyncio.sleep(1.0)  # let py-spy attach before the load starts
        yield
    finally:
        stop_profilers(spies)


def stop_profilers(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)
    for spy in spies:
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(timeout=10)
