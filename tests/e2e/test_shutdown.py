"""Stopping a worker with signals, while a handler is in the middle of its transaction.

The worker runs tests/apps/gated.py: the example handlers, except that `reserve_credit` waits for
an advisory lock the test holds from its own connection. So the test knows the handler is in
hand (its transaction open, inbox row written, nothing committed) when it sends the signal.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

from examples.orders.saga import STEP_NAMES
from tests.apps.gated import GATE_LOCK
from tests.support.probes import EXAMPLE_POOLS
from tests.support.processes import wait_exit
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from tests.conftest import Stack
    from tests.support.processes import Proc

pytestmark = pytest.mark.e2e

GATED_APP = "tests.apps.gated:worker"
ALL_ONCE = [(step, step) for step in STEP_NAMES]


class Gate:
    """The advisory lock `reserve_credit` waits for, held in a transaction of our own."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.closed = False

    async def open(self) -> None:
        """Release the lock: the blocked handler goes on."""
        if not self.closed:
            return
        await self.conn.commit()
        self.closed = False

    async def close(self) -> None:
        await self.conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": GATE_LOCK})
        self.closed = True


@asynccontextmanager
async def closed_gate(engine: AsyncEngine) -> AsyncIterator[Gate]:
    async with engine.connect() as conn:
        gate = Gate(conn)
        await gate.close()
        try:
            yield gate
        finally:
            await gate.open()


async def waiters_on_gate(engine: AsyncEngine) -> int:
    """Sessions of this test's database waiting (not granted) for the gate lock."""
    async with engine.connect() as conn:
        count = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :key "
                "AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"key": GATE_LOCK},
        )
        return int(count or 0)


async def wait_draining(stack: Stack) -> None:
    """The worker got the signal and cancelled its subscriptions: it takes no more commands.

    Seen on the pools with nothing in hand: a quorum queue keeps counting a cancelled consumer
    until the messages it holds are settled, so the payments queue cannot tell."""
    idle_pools = tuple(pool for pool in EXAMPLE_POOLS if pool != "payments")
    await stack.probe.wait_no_consumers(
        stack.pool_queues(idle_pools), what="the worker to stop consuming"
    )


async def blocked_in_reserve_credit(stack: Stack, gate: Gate, order_id: str) -> tuple[Proc, str]:
    """api + orchestrator + a gated worker; a saga whose reserve_credit is blocked on `gate`."""
    await stack.api()
    await stack.orchestrators()
    worker = await stack.another_worker(GATED_APP)
    instance_id = await stack.start({"order_id": order_id, "amount": 12})
    await wait_for(
        lambda: waiters_on_gate(stack.probe.engine),
        lambda n: n == 1,
        timeout=20,
        what="reserve_credit to block on the gate",
    )
    assert gate.closed
    return worker, instance_id


async def test_sigterm_drains_the_handler_in_hand_then_exits_cleanly(stack: Stack) -> None:
    async with closed_gate(stack.probe.engine) as gate:
        worker, instance_id = await blocked_in_reserve_credit(stack, gate, "S-1")

        worker.signal(signal.SIGTERM)
        await wait_draining(stack)
        assert worker.running, "the worker must wait for the handler in hand"
        await gate.open()

        assert await wait_exit(worker, within=15) == 0
    # The drained handler committed its effect before the worker went away.
    assert await stack.probe.ledger(instance_id) == [("reserve_credit", "reserve_credit")]

    await stack.probe.wait_no_consumers(stack.pool_queues(), what="no consumers left")
    await stack.another_worker("examples.orders.workers:worker")
    assert await stack.probe.wait_terminal(instance_id, timeout=30) == "completed"
    assert await stack.probe.ledger(instance_id) == ALL_ONCE


async def test_second_sigterm_exits_at_once_and_loses_nothing(stack: Stack) -> None:
    async with closed_gate(stack.probe.engine) as gate:
        worker, instance_id = await blocked_in_reserve_credit(stack, gate, "S-2")

        worker.signal(signal.SIGTERM)
        await wait_draining(stack)  # the first one was handled
        worker.signal(signal.SIGTERM)

        # Gone while its handler still waits on the closed gate: it did not wait for it.
        assert await wait_exit(worker, within=5) > 0
        assert await stack.probe.ledger(instance_id) == []
    # The gate is open: the abandoned transaction rolls back, the unacked command is redelivered.

    await stack.probe.wait_no_consumers(stack.pool_queues(), what="no consumers left")
    await stack.another_worker("examples.orders.workers:worker")
    assert await stack.probe.wait_terminal(instance_id, timeout=30) == "completed"
    ledger = await stack.probe.ledger(instance_id)
    assert ledger.count(("reserve_credit", "reserve_credit")) == 1
    assert ledger == ALL_ONCE


async def test_cancel_racing_a_step_in_flight_compensates_it_when_it_succeeds(stack: Stack) -> None:
    """Cancel arrives while reserve_credit is running; it then succeeds: it is undone too."""
    await stack.api()
    await stack.orchestrators()
    engine = stack.probe.engine
    async with closed_gate(engine) as gate:
        await stack.another_worker(GATED_APP)
        instance_id = await stack.start({"order_id": "RACE", "amount": 3})
        await wait_for(
            lambda: waiters_on_gate(engine), lambda n: n >= 1, what="the handler at the gate"
        )

        cancelled = await stack.http.post(
            f"/v1/instances/{instance_id}/cancel", json={"reason": "race"}
        )
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "compensating"
        await gate.open()

    assert await stack.probe.wait_terminal(instance_id) == "compensated"
    assert await stack.probe.ledger(instance_id) == [
        ("reserve_credit", "reserve_credit"),
        ("reserve_credit", "release_credit"),
    ]
    types = [h["type"] for h in await stack.probe.history(instance_id)]
    assert types.index("saga_cancel_requested") < types.index("step_succeeded")
    assert "step_dispatched" not in types[types.index("saga_cancel_requested") :]  # no new step
