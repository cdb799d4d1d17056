"""The example order saga's version 2 on the real servers, driven with the commands the README
and docs/events.md give: it waits for the payment service's `payment.captured`, then ships."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.processes import run_warren
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from tests.conftest import Stack

pytestmark = pytest.mark.e2e


def _warren(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    settings = stack.probe.settings
    env = {
        "WARREN_API_URL": f"http://{settings.api_host}:{settings.api_port}",
        "WARREN_DATABASE_URL": settings.database_url,
    }
    done = run_warren(env, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def _start_v2(stack: Stack, order_id: str) -> str:
    order = json.dumps({"order_id": order_id, "amount": 30})
    started = _warren(stack, "start", "order", "--version", "2", "--input", order, "--json")
    answer: dict[str, Any] = json.loads(started.stdout)
    assert answer["version"] == 2
    instance_id: str = answer["id"]
    return instance_id


def _pay(stack: Stack, order_id: str) -> str:
    data = json.dumps({"order_id": order_id, "amount": 30})
    args = ("events", "publish", "payment.captured", "--source", "payments", "--data", data)
    return _warren(stack, *args).stdout


async def _types(stack: Stack, instance_id: str) -> list[str]:
    return [h["type"] for h in await stack.probe.history(instance_id)]


async def test_order_v2_waits_for_its_payment_then_ships(stack: Stack) -> None:
    _warren(stack, "register", "examples.orders.saga:order_saga_v2")
    await stack.up()
    instance_id = _start_v2(stack, "V2-1")

    async def waiting() -> bool:
        return "wait_started" in await _types(stack, instance_id)

    await wait_for(waiting, timeout=60, what="order V2-1 to wait for its payment")
    assert await stack.probe.status(instance_id) == "running"
    assert await stack.probe.ledger(instance_id) == [
        ("reserve_credit", "reserve_credit"),
        ("reserve_stock", "reserve_stock"),
    ]

    printed = _pay(stack, "V2-1")

    assert f"reached {instance_id} (wait payment)" in printed
    assert await stack.probe.wait_terminal(instance_id) == "completed"
    assert [step for step, _ in await stack.probe.ledger(instance_id)] == [
        "reserve_credit",
        "reserve_stock",
        "ship",
    ]
    emitted = [h for h in await stack.probe.history(instance_id) if h["type"] == "event_emitted"]
    assert [(h["data"]["type"], h["data"]["data"]) for h in emitted] == [
        ("order.shipped", {"order_id": "V2-1", "amount": 30})
    ]


async def test_a_payment_captured_before_the_order_waits_is_kept_for_it(stack: Stack) -> None:
    _warren(stack, "register", "examples.orders.saga:order_saga_v2")
    await stack.up()

    printed = _pay(stack, "V2-2")  # no order V2-2 yet
    assert "matched nothing yet" in printed
    instance_id = _start_v2(stack, "V2-2")

    assert await stack.probe.wait_terminal(instance_id) == "completed"
    assert (await _types(stack, instance_id)).count("event_received") == 1
    unmatched = json.loads(_warren(stack, "events", "list", "--unmatched", "--json").stdout)
    assert unmatched["items"] == []  # the kept event reached its order
