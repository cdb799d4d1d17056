"""Poison and crashing messages end in the dead-letter queue, are recorded, and stop nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pytest
from sqlalchemy import text

from examples.orders.saga import STEP_NAMES
from tests.conftest import Stack
from tests.support.probes import EXAMPLE_POOLS
from tests.support.processes import run_warren
from tests.support.publish import publish
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


async def _dead_letters(stack: Stack) -> list[dict[str, Any]]:
    async with stack.probe.engine.connect() as conn:
        rows = await conn.execute(text("SELECT * FROM warren.dead_letters ORDER BY id"))
        return [dict(r._mapping) for r in rows]


async def _publish_raw(stack: Stack, exchange: str, routing_key: str, body: bytes) -> None:
    message = aio_pika.Message(body, message_id="poison-in-the-middle")
    await publish(stack.probe.settings.amqp_url, exchange, routing_key, message)


@pytest.mark.timeout(300)
async def test_a_poison_message_among_1000_good_ones(stack: Stack) -> None:
    await stack.up()
    gate = asyncio.Semaphore(40)

    async def start(n: int) -> str:
        async with gate:
            if n == 500:
                await _publish_raw(
                    stack, stack.topology.commands_exchange, "payments", b'{"not": "a command"}'
                )
            return await stack.start({"order_id": f"P-{n}", "amount": 1})

    ids = await asyncio.gather(*(start(n) for n in range(1000)))

    statuses = await stack.probe.wait_all_terminal(1000, timeout=240)
    assert set(statuses.values()) == {"completed"}
    assert set(statuses) == set(ids)
    [letter] = await wait_for(
        lambda: _dead_letters(stack), lambda rows: len(rows) >= 1, what="the dead letter"
    )
    assert letter["body"] == b'{"not": "a command"}'
    assert letter["kind"] is None
    assert letter["origin_exchange"] == stack.topology.commands_exchange
    assert letter["origin_routing_key"] == "payments"
    assert "undecodable" in letter["reason"]
    ledger = await stack.probe.ledger()
    assert len(ledger) == 1000 * len(STEP_NAMES)  # every effect exactly once
    for pool in EXAMPLE_POOLS:
        assert (await stack.probe.queue(stack.topology.pool_queue(pool)))[0] == 0
    assert (await stack.probe.queue(stack.topology.dead_letter_queue))[0] == 0


@pytest.mark.warren_settings(delivery_limit=2)
async def test_a_handler_that_kills_its_process_is_dead_lettered_after_the_limit(
    stack: Stack,
) -> None:
    await stack.api()
    await stack.orchestrators()
    stack.processes.worker("examples.orders.workers:worker", "inventory", "shipping")
    doomed = await stack.start({"order_id": "CRASH", "amount": 1})
    payments = stack.topology.pool_queue("payments")

    async def redelivered_or_parked() -> bool:
        return bool(await _dead_letters(stack)) or (await stack.probe.queue(payments))[0] > 0

    crashes = 0
    while not await _dead_letters(stack):
        worker = stack.processes.worker("tests.apps.crashy:worker", "payments")
        exit_code = await asyncio.to_thread(worker.wait, 60)
        assert exit_code == 1
        crashes += 1
        assert crashes <= 4, "the delivery limit did not stop the redeliveries"
        await wait_for(redelivered_or_parked, what="the command back in its queue or dead-lettered")

    [letter] = await _dead_letters(stack)
    assert letter["kind"] == "command"
    assert str(letter["instance_id"]) == doomed
    assert "delivery limit" in letter["reason"]
    assert letter["origin_routing_key"] == "payments"
    assert await stack.probe.wait_terminal(doomed) == "compensated"
    body = (await stack.http.get(f"/v1/instances/{doomed}")).json()
    assert body["failure"]["type"] == "DeadLettered"

    stack.processes.worker("tests.apps.crashy:worker", "payments")  # other sagas keep moving
    healthy = await stack.start({"order_id": "FINE", "amount": 1})
    assert await stack.probe.wait_terminal(healthy) == "completed"

    listed = (await stack.http.get("/v1/dead-letters", params={"kind": "command"})).json()
    assert [d["id"] for d in listed["items"]] == [letter["id"]]
    deleted = await stack.http.delete(f"/v1/dead-letters/{letter['id']}")
    assert deleted.status_code == 204
    assert (await stack.http.get(f"/v1/dead-letters/{letter['id']}")).status_code == 404


async def test_a_poison_message_sent_straight_to_a_pool_queue_is_replayed_to_it(
    stack: Stack,
) -> None:
    """Published through the default exchange (exchange "", routing key = the queue): its
    address is known, so it is recorded with it and replayed to the same queue."""
    await stack.api()
    await stack.orchestrators()
    stack.processes.worker("examples.orders.workers:worker", "payments")
    payments = stack.topology.pool_queue("payments")
    await stack.probe.wait_consumers(payments)

    await _publish_raw(stack, "", payments, b'{"not": "a command"}')
    [letter] = await wait_for(lambda: _dead_letters(stack), what="the dead letter")
    assert (letter["origin_exchange"], letter["origin_routing_key"], letter["origin_queue"]) == (
        "",
        payments,
        payments,
    )
    shown = (await stack.http.get(f"/v1/dead-letters/{letter['id']}")).json()
    assert (shown["origin_exchange"], shown["origin_queue"]) == ("", payments)

    settings = stack.probe.settings
    cli_env = {"WARREN_API_URL": f"http://{settings.api_host}:{settings.api_port}"}
    show = run_warren(cli_env, "dead-letters", "show", str(letter["id"]))
    assert f"from:   (default exchange) / {payments} ({payments})" in show.stdout, show.stdout

    replayed = await stack.http.post(f"/v1/dead-letters/{letter['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["replayed_at"] is not None

    # It reached the pool queue again: its worker parked it again, marked as the replay.
    rows = await wait_for(
        lambda: _dead_letters(stack), lambda rows: len(rows) == 2, what="the replayed letter"
    )
    again = rows[1]
    assert again["headers"]["x-warren-replay-of"] == str(letter["id"])
    assert again["body"] == letter["body"]
    assert (again["origin_exchange"], again["origin_queue"]) == ("", payments)
