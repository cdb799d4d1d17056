"""A pool that fails 100% then recovers: its breaker opens, steps wait without burning
attempts, a half-open probe succeeds, the breaker closes, and nothing is lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from orchestrator.config import BreakerPolicy
from orchestrator.service.registry import register_saga
from tests.apps.flaky import flaky_saga
from tests.conftest import Stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


async def _breaker(stack: Stack) -> dict[str, Any]:
    pools = (await stack.http.get("/v1/pools")).json()["items"]
    breaker: dict[str, Any] = next(p for p in pools if p["name"] == "flaky")["breaker"]
    return breaker


@pytest.mark.warren_settings(
    breakers={"flaky": BreakerPolicy(failure_rate=0.5, min_calls=5, open_seconds=1.0)}
)
async def test_the_breaker_opens_holds_the_steps_and_closes_after_a_good_probe(
    stack: Stack,
) -> None:
    await register_saga(stack.probe.engine, flaky_saga)
    await stack.api()
    await stack.orchestrators()
    worker = stack.processes.worker("tests.apps.flaky:worker", "flaky")
    await stack.probe.wait_consumers(stack.topology.pool_queue("flaky"), alive=worker.alive)

    ids = await asyncio.gather(*(stack.start({}, saga="flaky") for _ in range(10)))

    opened = await wait_for(
        lambda: _breaker(stack), lambda b: b["state"] == "open", what="the breaker to open"
    )
    assert opened["failure_rate"] == 0.5

    async def held_commands() -> int:
        async with stack.probe.engine.connect() as conn:
            count = await conn.scalar(
                text("SELECT count(*) FROM warren.outbox WHERE routing_key = 'flaky'")
            )
            return int(count or 0)

    # while open, retries wait in the outbox instead of failing again
    await wait_for(held_commands, lambda n: n >= 1, what="commands held by the open breaker")

    async with stack.probe.engine.begin() as conn:  # the downstream service recovers
        await conn.execute(text("UPDATE flaky_switch SET broken = false"))

    statuses = await stack.probe.wait_all_terminal(10, timeout=60)
    assert set(statuses.values()) == {"completed"}  # none failed for good: nothing lost
    await wait_for(
        lambda: _breaker(stack), lambda b: b["state"] == "closed", what="the breaker to close"
    )
    for instance_id in ids:
        body = (await stack.http.get(f"/v1/instances/{instance_id}")).json()
        assert body["steps"][0]["attempts"] < 50  # attempts were not burnt while it was open
    assert await stack.probe.count("warren.dead_letters") == 0
    history_types: list[str] = []
    for instance_id in ids:
        history_types += [h["type"] for h in await stack.probe.history(instance_id)]
    assert history_types.count("step_succeeded") == 10
    logs = stack.processes.logs()
    assert "pool flaky: closed -> open" in logs
    # reopened after a failed probe or not, it closed only once an attempt had succeeded
    assert "pool flaky: open -> half_open" in logs or "pool flaky: open -> closed" in logs
