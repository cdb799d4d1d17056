"""Fixtures for tests on the real servers.

A run creates one template database (migrated, example saga registered) and one RabbitMQ vhost;
each test clones the template into its own database and uses its own namespace of exchanges and
queues. Everything is dropped at the end of the run, pass or fail.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.orders.saga import order_saga
from examples.orders.workers import create_ledger
from orchestrator.config import Settings
from orchestrator.service.registry import register_saga
from orchestrator.storage.database import create_engine
from orchestrator.storage.migrate import upgrade
from tests.support import services
from tests.support.probes import CONSUMER_PATIENCE_SECONDS, EXAMPLE_POOLS, Probe, answers
from tests.support.processes import Proc, Processes, all_alive, free_port
from tests.support.waiting import wait_for

_counter = itertools.count(1)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def run_id() -> Iterator[str]:
    """This run's prefix: every database named after it is dropped when the run ends, whichever
    fixtures or tests made them."""
    run = services.new_run_id()
    try:
        yield run
    finally:
        services.drop_databases_with_prefix(run)


@pytest.fixture(scope="session")
def template_db(run_id: str) -> str:
    """Migrated, the example saga registered: each test clones it (dropped with the run)."""
    name = f"{run_id}_tpl"
    services.run_admin(f'CREATE DATABASE "{name}"')
    url = services.database_url(name)
    upgrade(url)

    async def prepare() -> None:
        engine = create_engine(url, pool_size=1)
        try:
            await register_saga(engine, order_saga)
            await create_ledger(engine)
        finally:
            await engine.dispose()

    asyncio.run(prepare())
    return name


@pytest.fixture(scope="session")
def amqp_url(run_id: str) -> Iterator[str]:
    url = services.create_vhost(run_id)
    try:
        yield url
    finally:
        services.delete_vhost(run_id)


@pytest.fixture(scope="session")
def janitor(run_id: str, amqp_url: str) -> services.QueueJanitor:
    return services.QueueJanitor(run_id, amqp_url)


@pytest.fixture
async def database(run_id: str, template_db: str) -> AsyncIterator[str]:
    name = f"{run_id}_{next(_counter)}"
    await services.create_database(name, template=template_db)
    try:
        yield services.database_url(name)
    finally:
        await services.drop_database(name)


@pytest.fixture
def settings(
    request: pytest.FixtureRequest,
    database: str,
    amqp_url: str,
    janitor: services.QueueJanitor,
) -> Iterator[Settings]:
    """Per-test settings; `@pytest.mark.warren_settings(delivery_limit=2)` overrides fields.
    The test's queues and exchanges are deleted after it (a few tests at a time)."""
    marker = request.node.get_closest_marker("warren_settings")
    overrides: dict[str, Any] = dict(marker.kwargs) if marker else {}
    defaults: dict[str, Any] = {
        "database_url": database,
        "amqp_url": amqp_url,
        "namespace": f"t{next(_counter)}",
        "api_port": free_port(),
        "outbox_grace_seconds": 0.5,
        "sweep_interval_seconds": 0.2,
        "shutdown_grace_seconds": 10.0,
    }
    settings = Settings(**{**defaults, **overrides})
    yield settings
    janitor.ended(settings.topology)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def probe(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Probe]:
    probe = Probe(settings, engine)
    yield probe
    await probe.close()


@pytest.fixture
def processes(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> Iterator[Processes]:
    procs = Processes(settings, tmp_path)
    yield procs
    procs.stop_all()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(procs.logs())  # shown by pytest with the failure


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://{settings.api_host}:{settings.api_port}", timeout=10.0
    ) as client:
        yield client


class Stack:
    """Helpers for bringing the example stack up in an end-to-end test."""

    def __init__(self, processes: Processes, probe: Probe, http: httpx.AsyncClient) -> None:
        self.processes = processes
        self.probe = probe
        self.http = http
        self.topology = probe.settings.topology

    async def api(self) -> None:
        proc = self.processes.api()
        await wait_for(
            lambda: answers(self.http, "/health/live"),
            timeout=CONSUMER_PATIENCE_SECONDS,
            what="the API to answer",
            alive=proc.alive,
        )

    async def orchestrators(self, count: int = 1, *, crash_at: str | None = None) -> None:
        before = await self.probe.consumers(self.topology.orchestrator_queue)
        started = [self.processes.orchestrator(crash_at=crash_at) for _ in range(count)]
        await self.probe.wait_consumers(
            self.topology.orchestrator_queue, before + count, alive=all_alive(started)
        )

    async def workers(
        self, *, crash_at: str | None = None, app: str = "examples.orders.workers:worker"
    ) -> None:
        proc = self.processes.worker(app, crash_at=crash_at)
        for pool in EXAMPLE_POOLS:
            await self.probe.wait_consumers(self.topology.pool_queue(pool), alive=proc.alive)

    async def another_worker(
        self, app: str = "examples.orders.workers:worker", *, crash_at: str | None = None
    ) -> Proc:
        """One more worker process of `app`; returns once it consumes every example pool (one
        consumer more on each than before)."""
        before = {queue: await self.probe.consumers(queue) for queue in self.pool_queues()}
        proc = self.processes.worker(app, crash_at=crash_at)

        async def consuming() -> bool:
            assert proc.running, f"worker exited early:\n{proc.log()}"
            for queue, count in before.items():
                if await self.probe.consumers(queue) <= count:
                    return False
            return True

        await wait_for(consuming, timeout=30, what="the worker to consume every pool")
        return proc

    def pool_queues(self, pools: tuple[str, ...] = EXAMPLE_POOLS) -> list[str]:
        return [self.topology.pool_queue(pool) for pool in pools]

    async def up(self) -> None:
        await self.api()
        await self.orchestrators()
        await self.workers()

    async def start(self, input: dict[str, Any], saga: str = "order") -> str:
        response = await self.http.post(f"/v1/sagas/{saga}", json={"input": input})
        assert response.status_code == 201, response.text
        instance_id: str = response.json()["id"]
        return instance_id


@pytest.fixture
def stack(processes: Processes, probe: Probe, http: httpx.AsyncClient) -> Stack:
    return Stack(processes, probe, http)
