"""The example order saga's own tests, written as a team would with the test harness: its real
handlers, writing the ledger through ``ctx.session`` in a real database, without RabbitMQ or
Warren's processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.orders.saga import order_saga
from examples.orders.workers import ledger, worker
from orchestrator.storage.database import create_engine
from tests.unit.test_docs import examples
from workers import StepContext, Worker
from workers.testing import Fail, SagaHarness, SagaResult

pytestmark = pytest.mark.integration

ORDER = {"order_id": "H-1", "amount": 30}


@pytest.fixture
def harness(database: str) -> SagaHarness:
    """The example's saga and worker app on a database where its ledger exists."""
    return SagaHarness(order_saga, worker, database_url=database)


@pytest.fixture
async def business(database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database, pool_size=1)
    yield engine
    await engine.dispose()


async def ledger_of(engine: AsyncEngine, instance_id: UUID) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ledger.c.action).where(ledger.c.instance_id == instance_id).order_by(ledger.c.id)
        )
        return [row.action for row in rows]


async def test_an_order_completes_and_writes_each_step_once(
    harness: SagaHarness, business: AsyncEngine
) -> None:
    result = await harness.run(input=ORDER)

    assert result.status == "completed"
    assert result.path == ["reserve_credit", "reserve_stock", "charge", "ship"]
    assert result.results["charge"] == {"action": "charge", "order_id": "H-1", "amount": 30}
    assert await ledger_of(business, result.instance_id) == result.path


async def test_a_refused_charge_releases_stock_then_credit(
    harness: SagaHarness, business: AsyncEngine
) -> None:
    result = await harness.run(input={**ORDER, "fail_at": "charge"})

    assert result.status == "compensated"
    assert result.path == ["reserve_credit", "reserve_stock", "charge"]
    assert result.compensated == ["reserve_stock", "reserve_credit"]
    assert result.failure is not None
    assert result.failure.type == "OrderRejected"
    assert await ledger_of(business, result.instance_id) == [
        "reserve_credit",
        "reserve_stock",
        "release_stock",
        "release_credit",
    ]


async def test_a_flaky_step_is_retried_and_its_effect_written_once(
    harness: SagaHarness, business: AsyncEngine
) -> None:
    result = await harness.run(input={**ORDER, "transient_failures": {"reserve_stock": 2}})

    assert result.status == "completed"
    assert result.attempts["reserve_stock"] == 3
    assert result.elapsed_seconds == pytest.approx(0.2 + 0.4)  # QUICK_RETRY, on the clock
    assert (await ledger_of(business, result.instance_id)).count("reserve_stock") == 1


async def test_a_compensation_that_keeps_failing_leaves_the_order_failed(
    harness: SagaHarness, business: AsyncEngine
) -> None:
    result = await harness.run(
        input=ORDER,
        script=[
            Fail(step="charge", times=None, type="PaymentsDown"),
            Fail(step="reserve_credit", compensation=True, times=None),
        ],
    )

    assert result.status == "failed"
    assert result.compensated == ["reserve_stock"]
    assert result.instance.steps["reserve_credit"].status == "compensation_failed"
    assert result.failure is not None
    assert result.failure.type == "PaymentsDown"
    assert await ledger_of(business, result.instance_id) == [
        "reserve_credit",
        "reserve_stock",
        "release_stock",
    ]


async def test_a_failing_handler_s_writes_are_rolled_back(
    database: str, business: AsyncEngine
) -> None:
    """One transaction per handler call, as in a worker: a handler that wrote, then raised,
    leaves nothing; the attempt that succeeds writes once."""
    flaky = Worker("flaky")

    @flaky.handler("write_then_crash", pool="p")
    async def write_then_crash(ctx: StepContext) -> dict[str, Any]:
        await ctx.session.execute(
            ledger.insert().values(
                instance_id=ctx.instance_id, step=ctx.step, action=f"try {ctx.attempt}", amount=1
            )
        )
        if ctx.attempt < 3:
            raise ConnectionError("the line dropped after the write")
        return {}

    from orchestrator.definitions import RetryPolicy, Saga, Step

    saga = Saga(
        name="flaky",
        version=1,
        steps=[Step(name="write", pool="p", command="write_then_crash", retry=RetryPolicy())],
    )

    result: SagaResult = await SagaHarness(saga, flaky, database_url=database).run(input={})

    assert result.status == "completed"
    assert result.attempts["write"] == 3
    assert await ledger_of(business, result.instance_id) == ["try 3"]


async def test_the_database_example_of_docs_testing_md_runs(
    database: str, business: AsyncEngine
) -> None:
    """tests/unit/test_docs.py only defines its test (it needs a database): run it here."""
    [code] = [code for where, code in examples(live=False) if "database_url=database" in code]
    namespace: dict[str, Any] = {"__name__": "docs_testing_database_example"}
    exec(compile(code, "docs/testing.md", "exec"), namespace)

    await namespace["test_a_refused_charge_releases_stock_then_credit"](database, business)
