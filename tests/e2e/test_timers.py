"""Timers and timeouts through the real processes."""

from __future__ import annotations

import asyncio
import signal

import pytest

from orchestrator.service.registry import register_saga
from tests.apps.sagas import timing_out
from tests.conftest import Stack
from tests.support.messages import success_reply
from tests.support.publish import publish_replies
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


async def test_a_timer_claimed_by_a_killed_orchestrator_is_fired_once_by_another(
    stack: Stack,
) -> None:
    await stack.api()
    await stack.workers()
    doomed = stack.processes.orchestrator(crash_at="orchestrator.timer_claimed")
    instance_id = await stack.start(
        {"order_id": "T", "amount": 1, "transient_failures": {"reserve_credit": 1}}
    )

    assert await asyncio.to_thread(doomed.wait, 60) == -signal.SIGKILL  # died holding the timer
    await stack.orchestrators()

    assert await stack.probe.wait_terminal(instance_id) == "completed"
    dispatched = [
        h["attempt"]
        for h in await stack.probe.history(instance_id)
        if h["type"] == "step_dispatched" and h["step"] == "reserve_credit"
    ]
    assert dispatched == [1, 2]  # the retry timer fired exactly once
    assert [s for s, _ in await stack.probe.ledger(instance_id)].count("reserve_credit") == 1
    assert await stack.probe.count("warren.timers") == 0


async def test_a_reply_after_the_timeout_is_compensated_too(stack: Stack) -> None:
    await register_saga(stack.probe.engine, timing_out)
    await stack.api()
    await stack.orchestrators()
    worker = stack.processes.worker("tests.apps.fast:worker", "fast")
    await stack.probe.wait_consumers(stack.topology.pool_queue("fast"), alive=worker.alive)
    instance_id = await stack.start({}, saga="timing-out")

    assert await stack.probe.wait_terminal(instance_id) == "compensated"  # `hold` timed out
    body = (await stack.http.get(f"/v1/instances/{instance_id}")).json()
    assert body["steps"][1]["error"]["type"] == "StepTimeout"

    # ... but the attempt did finish, late: its effect is real, so it is undone as well.
    late = success_reply(
        saga="timing-out", instance_id=body["id"], step="hold", seq=4, result={"held": True}
    )
    await publish_replies(stack.probe.settings, late)

    async def release_done() -> bool:
        history = await stack.probe.history(instance_id)
        return any(h["type"] == "compensation_succeeded" and h["step"] == "hold" for h in history)

    await wait_for(release_done, what="the late step to be compensated")
    assert await stack.probe.wait_terminal(instance_id) == "compensated"
    types = [h["type"] for h in await stack.probe.history(instance_id)]
    assert "step_succeeded_late" in types
    final = (await stack.http.get(f"/v1/instances/{instance_id}")).json()
    assert [s["status"] for s in final["steps"]] == ["compensated", "compensated"]
