"""Durable timers: woken by NOTIFY rather than by the poll, fired once across replicas."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from examples.orders.workers import worker as example_worker
from orchestrator.config import Settings
from orchestrator.definitions import Saga
from orchestrator.messaging.broker import Broker
from orchestrator.messaging.relay import Relay
from orchestrator.service.orchestrator import Orchestrator
from orchestrator.service.registry import register_saga
from orchestrator.service.starter import SagaStarter, StartRequest
from tests.apps.sagas import deadlined, delayed
from tests.support.probes import Probe
from tests.support.waiting import tasks_alive
from workers.runtime import WorkerRunner

pytestmark = pytest.mark.integration


@pytest.fixture
async def running(settings: Settings, probe: Probe) -> AsyncIterator[None]:
    """An orchestrator and the example workers in this process."""
    stopping = asyncio.Event()
    tasks = [
        asyncio.create_task(Orchestrator(settings).run(stopping)),
        asyncio.create_task(WorkerRunner(example_worker, settings, concurrency=2).run(stopping)),
    ]
    alive = tasks_alive(*tasks)
    await probe.wait_consumers(settings.topology.orchestrator_queue, alive=alive)
    await probe.wait_consumers(settings.topology.pool_queue("inventory"), alive=alive)
    yield
    stopping.set()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.warren_settings(sweep_interval_seconds=30.0)
@pytest.mark.usefixtures("running")
async def test_a_retry_timer_fires_on_notify_long_before_the_poll(
    settings: Settings, probe: Probe
) -> None:
    broker = Broker(settings.amqp_url, settings.topology)
    await broker.connect()
    try:
        starter = SagaStarter(probe.engine, Relay(probe.engine, broker), settings.topology)
        started = await starter.start(
            StartRequest(
                saga="order",
                input={"order_id": "T-1", "amount": 1, "transient_failures": {"reserve_stock": 2}},
            )
        )
    finally:
        await broker.close()

    # two retries, 0.2 s and 0.4 s apart; the poll would take 30 s for each
    assert await probe.wait_terminal(started.instance.id, timeout=10) == "completed"
    history = await probe.history(started.instance.id)
    assert [
        h["attempt"]
        for h in history
        if h["type"] == "step_dispatched" and h["step"] == "reserve_stock"
    ] == [1, 2, 3]


@pytest.fixture
async def fast_worker(settings: Settings, probe: Probe) -> AsyncIterator[None]:
    from tests.apps.fast import worker

    stopping = asyncio.Event()
    task = asyncio.create_task(WorkerRunner(worker, settings, concurrency=2).run(stopping))
    await probe.wait_consumers(settings.topology.pool_queue("fast"), alive=tasks_alive(task))
    yield
    stopping.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _start(settings: Settings, probe: Probe, saga: Saga) -> str:
    await register_saga(probe.engine, saga)
    broker = Broker(settings.amqp_url, settings.topology)
    await broker.connect()
    try:
        starter = SagaStarter(probe.engine, Relay(probe.engine, broker), settings.topology)
        started = await starter.start(StartRequest(saga=saga.name, input={}))
    finally:
        await broker.close()
    return str(started.instance.id)


@pytest.mark.usefixtures("running", "fast_worker")
async def test_a_deadline_stops_and_compensates_a_stuck_saga(
    settings: Settings, probe: Probe
) -> None:
    instance_id = await _start(settings, probe, deadlined)

    assert await probe.wait_terminal(instance_id, timeout=15) == "compensated"
    types = [h["type"] for h in await probe.history(instance_id)]
    assert "saga_deadline_exceeded" in types
    assert types[-2:] == ["compensation_succeeded", "saga_compensated"]


@pytest.mark.usefixtures("running", "fast_worker")
async def test_a_delayed_step_starts_after_its_delay(settings: Settings, probe: Probe) -> None:
    instance_id = await _start(settings, probe, delayed)

    assert await probe.wait_terminal(instance_id, timeout=15) == "completed"
    async with probe.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT type, recorded_at FROM warren.history WHERE instance_id = :i "
                    "AND type IN ('step_scheduled', 'step_dispatched') AND step = 'release' ORDER BY seq"
                ),
                {"i": instance_id},
            )
        ).all()
    [(_, scheduled), (_, dispatched)] = rows
    assert (dispatched - scheduled).total_seconds() >= 0.3
