"""A worker for the `flaky` pool whose only handler fails while a switch in its database says so,
and the saga that uses it: for the circuit-breaker tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import text

from orchestrator.definitions import RetryPolicy, Saga, Step
from workers import StepContext, Worker

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

flaky_saga = Saga(
    name="flaky",
    version=1,
    steps=[
        Step(
            name="call",
            pool="flaky",
            retry=RetryPolicy(
                max_attempts=50, initial_interval_seconds=0.2, backoff_coefficient=1.0
            ),
            timeout_seconds=5,
        )
    ],
)

worker = Worker("flaky")


@worker.on_startup
async def create_switch(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('flaky_switch'))"))
        await conn.execute(
            text("CREATE TABLE IF NOT EXISTS flaky_switch (broken boolean NOT NULL)")
        )
        await conn.execute(
            text(
                "INSERT INTO flaky_switch SELECT true WHERE NOT EXISTS (SELECT 1 FROM flaky_switch)"
            )
        )


@worker.handler("call", pool="flaky")
async def call(ctx: StepContext) -> dict[str, int]:
    if await ctx.session.scalar(text("SELECT broken FROM flaky_switch")):
        raise RuntimeError("the downstream service is down")
    return {"attempt": ctx.attempt}
