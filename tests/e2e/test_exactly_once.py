"""Exactly once through real duplicates and real crashes.

Every test puts a duplicate on the wire or kills a process at one of the crash points (a real
SIGKILL, see orchestrator/messaging/faults.py), lets the system recover, and then checks the
proof: the example ledger (no unique constraint: a second effect is a second row) and
warren.history (no transition applied twice, seq contiguous).
"""

from __future__ import annotations

import asyncio
import collections
import signal
from typing import TYPE_CHECKING, Any

import aio_pika
import pytest
from aio_pika import DeliveryMode, Message
from sqlalchemy import text

from examples.orders.saga import STEP_NAMES
from tests.support.processes import wait_exit
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from orchestrator.config import Settings
    from tests.conftest import Stack
    from tests.support.probes import Probe
    from tests.support.processes import Proc

pytestmark = pytest.mark.e2e

COMPENSATION_OF = {
    "reserve_credit": "release_credit",
    "reserve_stock": "release_stock",
    "charge": "refund",
}
ALL_ONCE = [(step, step) for step in STEP_NAMES]


# ---- local helpers ------------------------------------------------------------------------------


async def ready(probe: Probe, queue: str) -> int:
    """Messages ready in `queue`; 0 while nobody has declared it yet."""
    try:
        return (await probe.queue(queue))[0]
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return 0


async def wait_ready(probe: Probe, queue: str, count: int, within: float = 20.0) -> None:
    await wait_for(
        lambda: ready(probe, queue),
        lambda n: n == count,
        timeout=within,
        what=f"{count} ready message(s) in {queue}",
    )


async def wait_log(proc: Proc, needle: str, within: float = 20.0) -> None:
    async def log() -> str:
        return proc.log()

    await wait_for(log, lambda s: needle in s, timeout=within, what=f"{needle!r} in {proc.name}")


async def start_orchestrator(stack: Stack, *, crash_at: str | None = None) -> Proc:
    """One more orchestrator; returns once it consumes the replies queue (or has crashed, for a
    crash point that fires before it gets there: the caller then sees the exit code)."""
    queue = stack.topology.orchestrator_queue
    before = await stack.probe.consumers(queue)
    proc = stack.processes.orchestrator(crash_at=crash_at)

    async def consuming() -> bool:
        if not proc.running:
            assert crash_at is not None, f"orchestrator exited:\n{proc.log()}"
            return True
        return await stack.probe.consumers(queue) > before

    await wait_for(consuming, timeout=30, what="the orchestrator to consume replies")
    return proc


async def declare_orchestrator_queue(settings: Settings) -> None:
    """What an orchestrator declares when it starts: lets replies be routed while none runs."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        await settings.topology.declare_orchestrator(channel)
    finally:
        await connection.close()


async def duplicate_head(settings: Settings, queue: str) -> str:
    """Take the message at the head of `queue` and put two identical copies of it back (same
    body, same message id, persistent, confirmed), then ack the original. Returns its id."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        original = await channel.get_queue(queue, ensure=False)
        message = await original.get(no_ack=False, fail=True)
        assert message is not None
        assert message.message_id is not None
        for _ in range(2):
            await channel.default_exchange.publish(
                Message(
                    message.body,
                    message_id=message.message_id,
                    content_type=message.content_type,
                    headers=dict(message.headers or {}),
                    delivery_mode=DeliveryMode.PERSISTENT,
                ),
                routing_key=queue,
                mandatory=True,
            )
        await message.ack()
        return message.message_id
    finally:
        await connection.close()


async def inbox_count(probe: Probe, message_id: str) -> int:
    async with probe.engine.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM warren.inbox WHERE message_id = :id"), {"id": message_id}
        )
        return int(count or 0)


def assert_clean_history(history: list[dict[str, Any]]) -> None:
    """seq is 1..n without a gap and no (type, step, phase, attempt) was recorded twice."""
    assert [event["seq"] for event in history] == list(range(1, len(history) + 1)), history
    keys = collections.Counter(
        (event["type"], event["step"], event["phase"], event["attempt"]) for event in history
    )
    twice = {key: n for key, n in keys.items() if n > 1}
    assert not twice, f"recorded more than once: {twice}"
    assert not [e for e in history if e["type"] == "reply_ignored"], history


def succeeded_steps(history: list[dict[str, Any]]) -> list[str]:
    return [e["step"] for e in history if e["type"] == "step_succeeded"]


def expected_ledger(fail_at: str | None) -> list[tuple[str, str]]:
    if fail_at is None:
        return ALL_ONCE
    done = STEP_NAMES[: STEP_NAMES.index(fail_at)]
    undo = [(s, COMPENSATION_OF[s]) for s in reversed(done) if s in COMPENSATION_OF]
    return [(s, s) for s in done] + undo


async def assert_completed_once(stack: Stack, instance_id: str) -> None:
    assert await stack.probe.wait_terminal(instance_id, timeout=30) == "completed"
    assert await stack.probe.ledger(instance_id) == ALL_ONCE
    history = await stack.probe.history(instance_id)
    assert_clean_history(history)
    assert succeeded_steps(history) == STEP_NAMES


# ---- duplicates on the wire ---------------------------------------------------------------------


async def test_command_delivered_twice_has_one_effect(stack: Stack) -> None:
    await stack.api()
    await start_orchestrator(stack)
    payments = stack.topology.pool_queue("payments")
    instance_id = await stack.start({"order_id": "D-1", "amount": 10})
    await wait_ready(stack.probe, payments, 1)

    command_id = await duplicate_head(stack.probe.settings, payments)
    await wait_ready(stack.probe, payments, 2)
    worker = await stack.another_worker()

    await assert_completed_once(stack, instance_id)
    await wait_log(worker, f"duplicate command {command_id} dropped")
    assert await inbox_count(stack.probe, command_id) == 1


async def test_reply_delivered_twice_has_one_transition(stack: Stack) -> None:
    await stack.api()
    await declare_orchestrator_queue(stack.probe.settings)
    await stack.another_worker()
    replies = stack.topology.orchestrator_queue
    instance_id = await stack.start({"order_id": "D-2", "amount": 10})
    await wait_ready(stack.probe, replies, 1)

    reply_id = await duplicate_head(stack.probe.settings, replies)
    await wait_ready(stack.probe, replies, 2)
    orchestrator = await start_orchestrator(stack)

    await assert_completed_once(stack, instance_id)
    await wait_log(orchestrator, f"duplicate reply {reply_id} dropped")
    assert await inbox_count(stack.probe, reply_id) == 1
    history = await stack.probe.history(instance_id)
    assert not [
        e
        for e in history
        if e["type"] == "reply_ignored" and e["step"] == "reserve_credit" and e["attempt"] == 1
    ]


# ---- crashes at the crash points ----------------------------------------------------------------


async def test_worker_killed_after_commit_before_ack(stack: Stack) -> None:
    await stack.api()
    await start_orchestrator(stack)
    doomed = await stack.another_worker(crash_at="worker.after_commit")
    instance_id = await stack.start({"order_id": "K-1", "amount": 10})

    assert await wait_exit(doomed) == -signal.SIGKILL
    # Its transaction committed: the effect is there, once; the command went back unacked.
    assert await stack.probe.ledger(instance_id) == [("reserve_credit", "reserve_credit")]
    await stack.probe.wait_no_consumers(stack.pool_queues())

    worker = await stack.another_worker()
    await assert_completed_once(stack, instance_id)
    await wait_log(worker, "duplicate command")


async def _reply_waiting_for_an_orchestrator(stack: Stack, order_id: str) -> str:
    """api + a worker, no orchestrator: start a saga, let the worker run its first step and
    reply, then stop the worker gracefully. Returns with the reply ready in the orchestrators'
    queue, an empty outbox and no process left that could sweep it."""
    await stack.api()
    await declare_orchestrator_queue(stack.probe.settings)
    worker = await stack.another_worker()
    instance_id = await stack.start({"order_id": order_id, "amount": 10})
    await wait_ready(stack.probe, stack.topology.orchestrator_queue, 1)
    worker.signal(signal.SIGTERM)
    assert await wait_exit(worker) == 0
    # The api deletes its published start command a moment after the confirm.
    await wait_for(lambda: stack.probe.count("warren.outbox"), lambda n: n == 0, what="empty")
    await stack.probe.wait_no_consumers(stack.pool_queues())
    return instance_id


async def _orchestrator_killed_at(stack: Stack, crash_at: str, order_id: str) -> str:
    """A reply waiting (see above), then an orchestrator that kills itself at `crash_at` while
    handling it; returns the instance's id once that orchestrator is gone."""
    instance_id = await _reply_waiting_for_an_orchestrator(stack, order_id)
    doomed = await start_orchestrator(stack, crash_at=crash_at)
    assert await wait_exit(doomed) == -signal.SIGKILL
    await stack.probe.wait_no_consumers([stack.topology.orchestrator_queue])
    return instance_id


async def _fresh_orchestrator_sweeps(stack: Stack, inventory_commands: int) -> None:
    """A fresh orchestrator's sweeper empties the outbox, leaving `inventory_commands` in the
    inventory queue, and it drops the redelivered reply as a duplicate."""
    fresh = await start_orchestrator(stack)
    await wait_for(lambda: stack.probe.count("warren.outbox"), lambda n: n == 0, what="sweep")
    await wait_ready(stack.probe, stack.topology.pool_queue("inventory"), inventory_commands)
    await wait_ready(stack.probe, stack.topology.orchestrator_queue, 0)
    await wait_log(fresh, "duplicate reply")


async def test_orchestrator_killed_after_commit_before_publish_and_ack(stack: Stack) -> None:
    instance_id = await _orchestrator_killed_at(stack, "orchestrator.after_commit", "K-2")
    replies = stack.topology.orchestrator_queue
    inventory = stack.topology.pool_queue("inventory")

    # The transition committed (with its command in the outbox), nothing was published or acked.
    assert await stack.probe.count("warren.outbox") >= 1
    assert await ready(stack.probe, inventory) == 0
    assert await ready(stack.probe, replies) == 1
    assert succeeded_steps(await stack.probe.history(instance_id)) == ["reserve_credit"]

    # Its sweeper publishes the leftover command; the redelivered reply is a duplicate.
    await _fresh_orchestrator_sweeps(stack, inventory_commands=1)

    await stack.another_worker()
    await assert_completed_once(stack, instance_id)


async def test_relay_killed_between_confirm_and_delete(stack: Stack) -> None:
    instance_id = await _orchestrator_killed_at(stack, "relay.after_publish", "K-3")
    replies = stack.topology.orchestrator_queue
    inventory = stack.topology.pool_queue("inventory")

    # The broker confirmed the next command, the row that carries it was not deleted.
    assert await stack.probe.count("warren.outbox") == 1
    assert await ready(stack.probe, inventory) == 1
    assert await ready(stack.probe, replies) == 1

    # The row goes out a second time (a duplicate on the wire), the reply is dropped as a copy.
    await _fresh_orchestrator_sweeps(stack, inventory_commands=2)

    worker = await stack.another_worker()
    await assert_completed_once(stack, instance_id)
    await wait_log(worker, "duplicate command")


# ---- contention ---------------------------------------------------------------------------------


async def test_two_orchestrators_and_two_workers_apply_everything_once(stack: Stack) -> None:
    await stack.api()
    await start_orchestrator(stack)
    await start_orchestrator(stack)
    await stack.another_worker()
    await stack.another_worker()

    plan: dict[str, str | None] = {}
    for n in range(40):
        plan[f"C-{n}"] = STEP_NAMES[(n // 4) % len(STEP_NAMES)] if n % 4 == 3 else None

    async def start(order_id: str, fail_at: str | None) -> tuple[str, str | None]:
        saga_input: dict[str, Any] = {"order_id": order_id, "amount": 7}
        if fail_at is not None:
            saga_input["fail_at"] = fail_at
        return await stack.start(saga_input), fail_at

    started = await asyncio.gather(*(start(o, f) for o, f in plan.items()))
    statuses = await stack.probe.wait_all_terminal(len(started), timeout=60)

    for instance_id, fail_at in started:
        expected = "completed" if fail_at is None else "compensated"
        assert statuses[instance_id] == expected, (instance_id, fail_at)
        assert await stack.probe.ledger(instance_id) == expected_ledger(fail_at), fail_at
        history = await stack.probe.history(instance_id)
        assert_clean_history(history)
        assert succeeded_steps(history) == (
            STEP_NAMES if fail_at is None else STEP_NAMES[: STEP_NAMES.index(fail_at)]
        )
