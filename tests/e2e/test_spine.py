"""The whole path through real processes, real HTTP, real RabbitMQ and Postgres."""

from __future__ import annotations

import pytest

from examples.orders.saga import STEP_NAMES
from tests.conftest import Stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

COMPENSATION_OF = {
    "reserve_credit": "release_credit",
    "reserve_stock": "release_stock",
    "charge": "refund",
}


async def test_happy_path_completes_with_each_effect_once(stack: Stack) -> None:
    await stack.up()
    instance_id = await stack.start({"order_id": "A-1", "amount": 30, "items": ["book"]})

    assert await stack.probe.wait_terminal(instance_id) == "completed"
    assert await stack.probe.ledger(instance_id) == [(s, s) for s in STEP_NAMES]
    assert await stack.probe.count("warren.timers") == 0  # each step's timeout was dropped
    await wait_for(lambda: stack.probe.count("warren.outbox"), lambda n: n == 0, what="empty")

    body = (await stack.http.get(f"/v1/instances/{instance_id}")).json()
    assert body["status"] == "completed"
    assert [s["name"] for s in body["steps"]] == STEP_NAMES
    for step in body["steps"]:
        assert step["status"] == "succeeded"
        assert step["attempts"] == 1
        assert step["result"] == {"action": step["name"], "order_id": "A-1", "amount": 30}
        assert step["started_at"] <= step["finished_at"]


async def test_failure_at_each_step_compensates_completed_steps_in_reverse(stack: Stack) -> None:
    await stack.up()
    started = {
        fail_at: await stack.start({"order_id": f"F-{fail_at}", "amount": 5, "fail_at": fail_at})
        for fail_at in STEP_NAMES
    }

    for position, (fail_at, instance_id) in enumerate(started.items()):
        assert await stack.probe.wait_terminal(instance_id) == "compensated"
        done = STEP_NAMES[:position]
        undo = [(s, COMPENSATION_OF[s]) for s in reversed(done) if s in COMPENSATION_OF]
        assert await stack.probe.ledger(instance_id) == [(s, s) for s in done] + undo

        body = (await stack.http.get(f"/v1/instances/{instance_id}")).json()
        steps = {s["name"]: s for s in body["steps"]}
        assert steps[fail_at]["status"] == "failed"
        assert steps[fail_at]["error"]["type"] == "OrderRejected"
        assert body["failure"]["type"] == "OrderRejected"
        for name in done:
            expected = "compensated" if name in COMPENSATION_OF else "succeeded"
            assert steps[name]["status"] == expected


async def test_transient_failures_are_retried_then_succeed(stack: Stack) -> None:
    await stack.up()
    instance_id = await stack.start(
        {"order_id": "R-1", "amount": 3, "transient_failures": {"reserve_stock": 2}}
    )

    assert await stack.probe.wait_terminal(instance_id) == "completed"
    body = (await stack.http.get(f"/v1/instances/{instance_id}")).json()
    assert {s["name"]: s["attempts"] for s in body["steps"]}["reserve_stock"] == 3
    assert await stack.probe.ledger(instance_id) == [(s, s) for s in STEP_NAMES]
