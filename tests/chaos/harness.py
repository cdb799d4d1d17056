"""The chaos run: private servers, proxies, Warren's real processes, load, faults, verdict.

    private Postgres  ◀── pg proxy ◀──┐
                                      ├── api, 2 orchestrators, 2 workers per role
    private RabbitMQ  ◀── amqp proxy ◀┘      (separate OS processes, `warren …`)

The load mixes the order saga with the travel saga (every `travel_every`th start); each worker
role serves a pool of each (`POOLS`), so both meet the same faults. Alongside every
`events_every`th start, an order is placed and paid by events (`event_traffic`). The orders of
every `batch_every`th block of BATCH_BLOCK starts go in one batch request (`POST
/v1/sagas/order/batch`) when the block's last start is due.

The harness itself talks to the private servers directly (its probes must not suffer the
faults it injects) and to the API over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
import asyncpg
import httpx

from examples.orders.saga import STEP_NAMES
from orchestrator.config import Settings
from orchestrator.definitions import CHILD_POOL
from tests.chaos import event_traffic, invariants
from tests.chaos.event_traffic import PlacedOrder, Publisher
from tests.chaos.proxy import FaultyProxy
from tests.chaos.schedule import ALL_KINDS, ROLES, Fault, Kind, build
from tests.chaos.servers import Cleanup, PrivatePostgres, PrivateRabbitMQ
from tests.support.processes import Proc, Processes, free_port, run_warren, settings_env
from tests.support.travel import BOOKINGS, Trip, name_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

DATABASE = "warren"
POOLS = {
    "payments": ("payments", "billing"),
    "inventory": ("inventory", "bookings"),
    "shipping": ("shipping", "seating"),
}
"""The pools each worker role serves: one of the order saga's, one of the travel saga's."""
APP = "tests.chaos.app:worker"
SAGAS = (
    "examples.orders.saga:order_saga",
    "examples.travel.saga:sagas",
    "tests.chaos.app:placed_order",
)
START_SLOTS = 16
"""Start requests in flight at once."""
BATCH_BLOCK = 8
"""Starts per block; the orders of some blocks are started by one batch request."""
DUPLICATE_COMMAND = re.compile(r"duplicate command \S+ dropped")
DUPLICATE_REPLY = re.compile(r"duplicate reply \S+ dropped")


@dataclass
class Config:
    sagas: int = 250
    seed: int = 1
    duration: float = 90.0
    """Seconds of load; faults happen in the first 85% of it."""
    faults: int = 20
    kinds: tuple[Kind, ...] = ALL_KINDS
    orchestrators: int = 2
    workers_per_pool: int = 2
    concurrency: int | None = None
    """Each worker's --concurrency; None: its default."""
    pauses: tuple[float, float] = (5.0, 20.0)
    """Range of SIGSTOP durations, seconds."""
    drain_timeout: float = 150.0
    outbox_bound: float = 30.0
    log_dir: Path | None = None
    keep_logs: bool = False
    travel_every: int = 4
    """Every this many sagas, one is a travel saga (with its child payment saga); 0: none."""
    events_every: int = 5
    """Alongside every this many starts, an order placed and paid by events; 0: none."""
    batch_every: int = 3
    """Every this many blocks of BATCH_BLOCK starts, the block's orders go in one batch; 0:
    every start alone."""


@dataclass
class Run:
    """What happened, as the harness saw it."""

    started: dict[str, str | None] = field(default_factory=dict)
    """Orders, by id: where each was asked to fail."""
    trips: dict[str, Trip] = field(default_factory=dict)
    placed: list[PlacedOrder] = field(default_factory=list)
    """The orders of the event traffic, as drawn (what was sent, what failed to be)."""
    start_failures: list[str] = field(default_factory=list)
    started_in_batches: int = 0
    """Orders started by a batch request (of those in `started`)."""
    applied: list[dict[str, Any]] = field(default_factory=list)
    poison: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)


class Harness:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.schedule: list[Fault] = build(
            config.seed,
            duration=config.duration,
            faults=config.faults,
            kinds=config.kinds,
            replicas=min(config.orchestrators, config.workers_per_pool),
            long_pauses=config.pauses,
        )
        self.run_state = Run()
        self.slots: dict[str, Proc] = {}
        self.api_proc: Proc | None = None
        self.down: set[str] = set()
        self.paused: set[str] = set()
        self.fault_tasks: list[asyncio.Task[None]] = []
        self.t0 = 0.0

    # ---- the run --------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        cleanup = Cleanup()
        log_dir = self.config.log_dir or Path(
            tempfile.mkdtemp(prefix=f"warren-chaos-{self.config.seed}-")
        )
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        began = time.monotonic()
        try:
            summary = await self._run(cleanup)
        finally:
            cleanup.run()
        summary["elapsed_seconds"] = round(time.monotonic() - began, 1)
        summary["logs"] = str(log_dir)
        return summary

    async def _run(self, cleanup: Cleanup) -> dict[str, Any]:
        config = self.config
        self.pg = PrivatePostgres(cleanup)
        await asyncio.to_thread(self.pg.create)
        self.rabbit = PrivateRabbitMQ(cleanup)
        await asyncio.to_thread(self.rabbit.start)
        admin = await asyncpg.connect(self.pg.admin_dsn)
        await admin.execute(f"CREATE DATABASE {DATABASE}")
        await admin.close()
        self.dsn = self.pg.url(DATABASE)

        self.pg_proxy = FaultyProxy("postgres", self.pg.port)
        self.amqp_proxy = FaultyProxy("amqp", self.rabbit.port)
        await self.pg_proxy.start()
        await self.amqp_proxy.start()

        self.settings = Settings(
            database_url=self.pg.url(DATABASE, port=self.pg_proxy.port),
            amqp_url=self.rabbit.url(port=self.amqp_proxy.port),
            namespace="warren",
            api_port=free_port(),
            outbox_grace_seconds=1.0,
            sweep_interval_seconds=0.5,
            shutdown_grace_seconds=5.0,
        )
        self.topology = self.settings.topology
        env = settings_env(self.settings)
        for args in (["migrate"], *(["register", sagas] for sagas in SAGAS)):
            done = await asyncio.to_thread(run_warren, env, *args)
            if done.returncode != 0:
                raise RuntimeError(f"warren {args[0]} failed: {done.stdout}{done.stderr}")

        self.procs = Processes(self.settings, self.log_dir)
        cleanup.add("warren processes", self.procs.stop_all)
        self.api_proc = self.procs.api()
        for role in ROLES:
            count = config.orchestrators if role == "orchestrator" else config.workers_per_pool
            for n in range(count):
                self._spawn(f"{role}#{n}")

        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.settings.api_port}", timeout=10.0
        ) as self.http:
            await self._wait_up()
            await event_traffic.bind_fulfilled_queue(
                self.rabbit.url(), self.topology.events_exchange
            )
            monitor = asyncio.create_task(self._monitor())
            self.t0 = time.monotonic()
            load = asyncio.create_task(self._load())
            await self._inject()
            await load
            healed_at = await self._heal()
            drain_seconds = await self._drain(healed_at)
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            summary = await self._verdict(drain_seconds)
        await self.pg_proxy.close()
        await self.amqp_proxy.close()
        return summary

    def _spawn(self, slot: str) -> None:
        role = slot.split("#")[0]
        if role == "orchestrator":
            proc = self.procs.orchestrator()
        else:
            proc = self.procs.worker(APP, *POOLS[role], concurrency=self.config.concurrency)
        proc.name = slot
        self.slots[slot] = proc

    def expected_consumers(self) -> dict[str, int]:
        expected = {
            self.topology.orchestrator_queue: self.config.orchestrators,
            self.topology.dead_letter_queue: self.config.orchestrators,
            self.topology.pool_queue(CHILD_POOL): self.config.orchestrators,
            self.topology.events_queue: self.config.orchestrators,
        }
        for pools in POOLS.values():
            for pool in pools:
                expected[self.topology.pool_queue(pool)] = self.config.workers_per_pool
        return expected

    async def _queues(self) -> dict[str, tuple[int, int, int]]:
        return await asyncio.to_thread(self.rabbit.list_queues)

    async def _consumers_ok(self) -> bool:
        try:
            queues = await self._queues()
        except Exception:  # noqa: BLE001 - the node may be restarting: not ready yet
            return False
        return all(
            queues.get(name, (0, 0, 0))[2] == n for name, n in self.expected_consumers().items()
        )

    async def _wait_up(self) -> None:
        deadline = time.monotonic() + 90
        while True:
            try:
                live = (await self.http.get("/health/live")).status_code == 200
            except httpx.TransportError:
                live = False
            if live and await self._consumers_ok():
                return
            if time.monotonic() > deadline:
                raise RuntimeError("Warren's processes did not come up:\n" + self.procs.logs())
            await asyncio.sleep(1.0)

    # ---- load -----------------------------------------------------------------------------------

    async def _load(self) -> None:
        rng = random.Random(self.config.seed * 7919 + 1)
        # Trips draw from their own generator: the orders draw as they did before trips.
        trips = random.Random(self.config.seed * 7919 + 2)
        every = self.config.travel_every
        interval = self.config.duration * 0.9 / max(self.config.sagas, 1)
        # Bounded, like a real client pool: during an outage the starts wait their turn
        # instead of piling up by the thousand (which starved this process, and with it the
        # proxies every Warren connection goes through).
        slots = asyncio.Semaphore(START_SLOTS)
        starts: list[asyncio.Task[None]] = []
        # The event traffic draws from its own generator too, and publishes on its own.
        placing = random.Random(self.config.seed * 7919 + 3)
        events_every = self.config.events_every
        publisher = Publisher(self.rabbit.url(), self.topology.events_exchange, self.http)
        batch_every = self.config.batch_every
        batch: list[tuple[int, str | None]] = []
        for n in range(self.config.sagas):
            fail_at = None if rng.random() < 0.5 else rng.choice(STEP_NAMES)
            plan: str | Trip | None = fail_at
            if every and n % every == every - 1:
                plan = _draw_trip(trips)
            await _sleep_until(self.t0 + n * interval)
            batched = batch_every and (n // BATCH_BLOCK) % batch_every == batch_every - 1
            if batched and not isinstance(plan, Trip):
                batch.append((n, plan))
            else:
                starts.append(asyncio.create_task(self._start_when_free(slots, n, plan)))
            if batch and (n % BATCH_BLOCK == BATCH_BLOCK - 1 or n == self.config.sagas - 1):
                starts.append(asyncio.create_task(self._start_batch_when_free(slots, batch)))
                batch = []
            if events_every and n % events_every == 1 % events_every:
                order = event_traffic.draw(placing, self.config.seed, n)
                self.run_state.placed.append(order)
                starts.append(asyncio.create_task(publisher.run(order, time.monotonic())))
        try:
            await asyncio.gather(*starts)
        finally:
            await publisher.close()

    async def _start_when_free(
        self, slots: asyncio.Semaphore, n: int, plan: str | Trip | None
    ) -> None:
        async with slots:
            await self._start_one(n, plan)

    async def _start_batch_when_free(
        self, slots: asyncio.Semaphore, batch: list[tuple[int, str | None]]
    ) -> None:
        async with slots:
            await self._start_batch(batch)

    async def _start_batch(self, batch: list[tuple[int, str | None]]) -> None:
        """Start orders `batch` (n, where each is asked to fail) in one request, as a careful
        client does: each with its key, the request sent again (with the starts not yet
        answered 2xx) while the answer is an outage."""
        waiting = {self._start_key(n): (n, plan) for n, plan in batch}
        last: dict[str, str] = {}
        async for _ in _attempts():
            starts = [
                {"input": _order_input(n, plan), "idempotency_key": key}
                for key, (n, plan) in waiting.items()
            ]
            try:
                response = await self.http.post("/v1/sagas/order/batch", json={"starts": starts})
            except httpx.TransportError as exc:
                last = dict.fromkeys(waiting, repr(exc))
                continue
            if response.status_code != 200:
                last = dict.fromkeys(waiting, f"{response.status_code} {response.text[:200]}")
                if response.status_code < 500:
                    break  # a client error will not get better
                continue
            self._take_batch_results(waiting, response.json()["results"], last)
            if not waiting:
                break
        self.run_state.start_failures.extend(f"{key}: {last.get(key, '')}" for key in waiting)

    def _take_batch_results(
        self,
        waiting: dict[str, tuple[int, str | None]],
        results: list[dict[str, Any]],
        last: dict[str, str],
    ) -> None:
        """Record the starts answered 2xx, and those refused for good; leave in `waiting`
        (with their answer in `last`) the ones to send again."""
        for (key, (_, plan)), result in zip(list(waiting.items()), results, strict=True):
            if result["status"] in (200, 201):
                self.run_state.started[result["instance"]["id"]] = plan
                self.run_state.started_in_batches += 1
                del waiting[key]
                continue
            last[key] = f"{result['status']} {result['problem']}"
            if result["status"] < 500:  # refused for good
                del waiting[key]
                self.run_state.start_failures.append(f"{key}: {last[key]}")

    async def _start_one(self, n: int, plan: str | Trip | None) -> None:
        """Start order `n`, asked to fail at `plan` (a step name or None), or a trip."""
        if isinstance(plan, Trip):
            saga, saga_input = "travel", plan.input(f"chaos-{n}")
        else:
            saga, saga_input = "order", _order_input(n, plan)
        key = self._start_key(n)
        last = ""
        async for _ in _attempts():
            try:
                response = await self.http.post(
                    f"/v1/sagas/{saga}",
                    json={"input": saga_input},
                    headers={"Idempotency-Key": key},
                )
            except httpx.TransportError as exc:
                last = repr(exc)
                continue
            if response.status_code in (200, 201):
                instance_id = response.json()["id"]
                if isinstance(plan, Trip):
                    self.run_state.trips[instance_id] = plan
                else:
                    self.run_state.started[instance_id] = plan
                return
            last = f"{response.status_code} {response.text[:200]}"
            if response.status_code < 500:
                break  # a client error will not get better
        self.run_state.start_failures.append(f"{key}: {last}")

    def _start_key(self, n: int) -> str:
        """The idempotency key of start `n`: a start sent again makes no second instance."""
        return f"chaos-{self.config.seed}-{n}"

    # ---- faults ---------------------------------------------------------------------------------

    async def _inject(self) -> None:
        for fault in self.schedule:
            await _sleep_until(self.t0 + fault.at)
            self.fault_tasks.append(asyncio.create_task(self._apply(fault)))
        await asyncio.gather(*self.fault_tasks)

    async def _apply(self, fault: Fault) -> None:
        record: dict[str, Any] = {"at": round(time.monotonic() - self.t0, 2), "kind": fault.kind}
        record["fault"] = fault.describe()
        self.run_state.applied.append(record)
        try:
            record["outcome"] = await self._do(fault)
        except Exception as exc:  # noqa: BLE001 - a fault that fails is reported, not fatal
            record["outcome"] = f"error: {exc!r}"[:300]

    async def _do(self, fault: Fault) -> str:
        kind = fault.kind
        if kind is Kind.KILL:
            return await self._kill(fault.target, fault.seconds)
        if kind is Kind.PAUSE:
            return await self._pause(fault.target, fault.seconds)
        if kind is Kind.RABBIT_CLOSE_CONNECTIONS:
            await asyncio.to_thread(self.rabbit.ctl, "close_all_connections", "chaos")
            return "closed"
        if kind is Kind.RABBIT_RESTART:
            await asyncio.to_thread(self.rabbit.stop)
            await asyncio.sleep(fault.seconds)
            await asyncio.to_thread(self.rabbit.start)
            return "restarted"
        if kind is Kind.PG_RESTART:
            await asyncio.to_thread(self.pg.restart, fault.mode)
            return f"restarted ({fault.mode})"
        if kind is Kind.PG_TERMINATE:
            return await self._terminate_backends(half=fault.mode == "half")
        if kind is Kind.POISON:
            return await self._poison(fault.target)
        proxy = self.amqp_proxy if kind.value.startswith("amqp") else self.pg_proxy
        if kind in (Kind.AMQP_PROXY_RESET, Kind.PG_PROXY_RESET):
            return f"reset {proxy.reset()} connections"
        if kind in (Kind.AMQP_PROXY_BLACKHOLE, Kind.PG_PROXY_BLACKHOLE):
            proxy.blackhole(fault.seconds, reset_after=fault.mode == "reset")
            await asyncio.sleep(fault.seconds)
            return f"blackholed, then {fault.mode}"
        proxy.delay(fault.seconds, float(fault.mode))
        await asyncio.sleep(fault.seconds)
        return f"delayed by {fault.mode}s"

    async def _kill(self, slot: str, pause: float) -> str:
        if slot in self.down:
            return "skipped: already down"
        proc = self.slots[slot]
        self.down.add(slot)
        self.paused.discard(slot)
        proc.signal(signal.SIGKILL)
        await asyncio.to_thread(proc.popen.wait, 10)
        await asyncio.sleep(pause)
        self._spawn(slot)
        self.down.discard(slot)
        return f"killed pid {proc.pid}, restarted as {self.slots[slot].pid}"

    async def _pause(self, slot: str, seconds: float) -> str:
        if slot in self.down or slot in self.paused:
            return "skipped: down or paused"
        proc = self.slots[slot]
        self.paused.add(slot)
        proc.signal(signal.SIGSTOP)
        await asyncio.sleep(seconds)
        if slot in self.paused and self.slots[slot] is proc:
            proc.signal(signal.SIGCONT)
            self.paused.discard(slot)
        return f"stopped pid {proc.pid}, continued"

    async def _terminate_backends(self, *, half: bool) -> str:
        conn = await asyncpg.connect(self.pg.admin_dsn)
        try:
            sample = "AND random() < 0.5" if half else ""
            rows = await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = $1 AND pid <> pg_backend_pid() {sample}",
                DATABASE,
            )
        finally:
            await conn.close()
        return f"terminated {len(rows)} backends"

    async def _poison(self, role: str) -> str:
        message_id = f"chaos-poison-{self.config.seed}-{len(self.run_state.poison)}"
        if role == "orchestrator":
            exchange, routing_key = self.topology.replies_exchange, "reply"
        else:
            exchange, routing_key = self.topology.commands_exchange, role
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = await aio_pika.connect(self.rabbit.url(), timeout=10)
                async with connection:
                    channel = await connection.channel(publisher_confirms=True)
                    target = await channel.get_exchange(exchange, ensure=False)
                    await target.publish(
                        aio_pika.Message(
                            b"\xffchaos poison: not an envelope",
                            message_id=message_id,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key,
                        mandatory=True,
                        timeout=10,
                    )
                self.run_state.poison.add(message_id)
                return f"published {message_id} to {exchange}/{routing_key}"
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1.0)

    async def _monitor(self) -> None:
        """A supervisor: a process that exits without being killed by us is restarted, and
        reported (Warren's processes must ride out faults by themselves)."""
        while True:
            await asyncio.sleep(1.0)
            for slot, proc in list(self.slots.items()):
                if slot not in self.down and not proc.running:
                    tail = proc.log()[-1500:]
                    self.run_state.unexpected_exits.append(
                        f"{slot} pid {proc.pid} exited by itself "
                        f"(code {proc.popen.returncode}):\n{tail}"
                    )
                    self._spawn(slot)
            if self.api_proc is not None and not self.api_proc.running:
                self.run_state.unexpected_exits.append(
                    f"api pid {self.api_proc.pid} exited by itself:\n{self.api_proc.log()[-1500:]}"
                )
                self.api_proc = self.procs.api()

    # ---- heal, drain, verdict -------------------------------------------------------------------

    async def _heal(self) -> float:
        try:
            await asyncio.wait_for(asyncio.gather(*self.fault_tasks), timeout=60)
        except TimeoutError:
            self.run_state.problems.append("a fault did not finish within 60s of the load's end")
        self.pg_proxy.heal()
        self.amqp_proxy.heal()
        for slot in list(self.paused):
            self.slots[slot].signal(signal.SIGCONT)
            self.paused.discard(slot)
        if not self.rabbit.running():
            await asyncio.to_thread(self.rabbit.start)
        if not await asyncio.to_thread(self.pg.running):
            await asyncio.to_thread(self.pg.start)
        return time.monotonic()

    async def _drained(self) -> bool:
        try:
            conn = await asyncpg.connect(self.dsn, timeout=5)
        except (OSError, asyncpg.PostgresError):
            return False
        try:
            ids = [
                *self.run_state.started,
                *self.run_state.trips,
                *(order.instance_id for order in self.run_state.placed),
            ]
            unfinished = await conn.fetchval(
                "SELECT count(*) FROM warren.instances WHERE status NOT IN "
                "('completed', 'compensated', 'failed')"
            )
            ended = await conn.fetchval(
                "SELECT count(*) FROM warren.instances WHERE id = ANY($1::uuid[]) "
                "AND status IN ('completed', 'compensated', 'failed')",
                ids,
            )
            outbox = await conn.fetchval("SELECT count(*) FROM warren.outbox")
            letters = await conn.fetchval("SELECT count(*) FROM warren.dead_letters")
        finally:
            await conn.close()
        if unfinished or ended != len(ids) or outbox or letters < len(self.run_state.poison):
            return False
        queues = await self._queues()
        # The harness's own queue of emitted events is read at the end, not drained.
        queues.pop(event_traffic.FULFILLED_QUEUE, None)
        if any(ready or unacked for ready, unacked, _ in queues.values()):
            return False
        return await self._consumers_ok()

    async def _drain(self, healed_at: float) -> float | None:
        deadline = healed_at + self.config.drain_timeout
        while time.monotonic() < deadline:
            try:
                if await self._drained():
                    return round(time.monotonic() - healed_at, 1)
            except Exception as exc:  # noqa: BLE001 - report it, keep draining
                self.run_state.problems.append(f"drain probe failed: {exc!r}")
            await asyncio.sleep(2.0)
        self.run_state.problems.append(
            f"not drained within {self.config.drain_timeout:.0f}s of healing; open through the "
            f"proxies: {len(self.amqp_proxy.links)} to RabbitMQ "
            f"({self.amqp_proxy.connections_accepted} accepted in all), "
            f"{len(self.pg_proxy.links)} to Postgres"
        )
        return None

    async def _stop_gracefully(self) -> list[str]:
        """SIGTERM every process; one that does not exit in time is hung."""
        hung: list[str] = []
        procs = [*self.slots.values(), *([self.api_proc] if self.api_proc else [])]
        for proc in procs:
            proc.signal(signal.SIGTERM)
        limit = time.monotonic() + self.settings.shutdown_grace_seconds + 15
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, max(limit - time.monotonic(), 0.1))
            if proc.running:
                hung.append(f"{proc.name} pid {proc.pid} did not stop on SIGTERM")
                proc.kill()
        return hung

    async def _verdict(self, drain_seconds: float | None) -> dict[str, Any]:
        state = self.run_state
        facts = await invariants.gather_facts(self.dsn)
        fulfilled = await event_traffic.read_fulfilled(self.rabbit.url())
        queues = await self._queues()
        sagas = invariants.check_sagas(state.started, state.trips, facts)
        placed = invariants.check_events(state.placed, facts, fulfilled)
        hung = await self._stop_gracefully()
        problems = [*state.problems, *hung, *state.unexpected_exits]
        checks = [
            *sagas.checks,
            *placed.checks,
            invariants.check_outbox(facts, self.config.outbox_bound),
            invariants.check_queues(queues, state.poison, facts),
            invariants.check_consumers(queues, self.expected_consumers(), problems),
        ]
        if state.start_failures:
            checks[0].fail(f"{len(state.start_failures)} starts never got a 2xx")
        duplicates = {"commands": 0, "replies": 0}
        for proc in self.procs.procs:
            text = proc.log()
            duplicates["commands"] += len(DUPLICATE_COMMAND.findall(text))
            duplicates["replies"] += len(DUPLICATE_REPLY.findall(text))
        by_kind: dict[str, int] = {}
        for record in state.applied:
            if not str(record.get("outcome", "")).startswith(("skipped", "error")):
                by_kind[record["kind"]] = by_kind.get(record["kind"], 0) + 1
        ok = all(check.ok for check in checks)
        return {
            "ok": ok,
            "seed": self.config.seed,
            "sagas_requested": self.config.sagas,
            "sagas_started": len(state.started) + len(state.trips),
            "trips_started": len(state.trips),
            "orders_started_in_batches": state.started_in_batches,
            "start_failures": len(state.start_failures),
            "by_status": sagas.by_status,
            "deviations_from_input": sagas.deviations,
            "faults_scheduled": len(self.schedule),
            "faults_by_kind": by_kind,
            "faults_not_applied": [
                f"{r['fault']}: {r.get('outcome')}"
                for r in state.applied
                if str(r.get("outcome", "")).startswith(("skipped", "error"))
            ],
            "poison_injected": len(state.poison),
            "dead_letters_recorded": len(facts.dead_letters),
            "duplicates_dropped_by_inboxes": duplicates,
            "events": placed.summary,
            "effects_double_applied": sagas.double_applied + placed.double_applied,
            "sagas_lost": sagas.lost + placed.lost,
            "drain_seconds": drain_seconds,
            "unexpected_exits": len(state.unexpected_exits),
            "invariants": {check.name: check.as_json() for check in checks},
        }


def _draw_trip(rng: random.Random) -> Trip:
    """A trip paid by card or invoice, for 1 to 3 passengers; half of them fail at a step
    drawn from those it runs (a seat by its key: one passenger's)."""
    trip = Trip(rng.choice(["card", "invoice"]), passengers=rng.randint(1, 3))
    if rng.random() < 0.5:
        return trip
    steps = [*BOOKINGS, *(name_of(step) for step in trip.pay_steps), *trip.seats]
    return Trip(trip.payment, fail_at=rng.choice(steps), passengers=trip.passengers)


def _order_input(n: int, fail_at: str | None) -> dict[str, Any]:
    """Order `n`'s input, asked to fail at step `fail_at` (None: to complete)."""
    order: dict[str, Any] = {"order_id": f"chaos-{n}", "amount": 10}
    if fail_at is not None:
        order["fail_at"] = fail_at
    return order


async def _attempts(seconds: float = 120.0) -> AsyncIterator[None]:
    """One turn per attempt, for `seconds` at most, pausing between them (0.5 s, doubling up
    to 5 s): a start sent again while the answer is an outage."""
    deadline = time.monotonic() + seconds
    pause = 0.5
    while time.monotonic() < deadline:
        yield
        await asyncio.sleep(pause)
        pause = min(pause * 2, 5.0)


async def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
