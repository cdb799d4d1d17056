"""The outbox relay on the real database and broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.config import Settings
from orchestrator.messaging import broker as broker_module
from orchestrator.messaging.broker import Broker
from orchestrator.messaging.envelope import new_message_id
from orchestrator.messaging.relay import Relay
from orchestrator.persistence.outbox import OutboxMessage, enqueue
from orchestrator.storage.database import transaction
from tests.support.probes import Probe
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[Broker]:
    broker = Broker(settings.amqp_url, settings.topology)
    await broker.connect()
    yield broker
    await broker.close()


def _command(settings: Settings, pool: str = "payments") -> OutboxMessage:
    message_id = new_message_id()
    return OutboxMessage(
        message_id=message_id,
        exchange=settings.topology.commands_exchange,
        routing_key=pool,
        body=f'{{"id": "{message_id}"}}'.encode(),
    )


async def _drain_ids(settings: Settings, queue: str, expected: int) -> list[str]:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        q = await channel.get_queue(queue)
        ids: list[str] = []

        async def take() -> int:
            message = await q.get(fail=False)
            if message is not None:
                ids.append(str(message.message_id))
                await message.ack()
            return len(ids)

        await wait_for(
            take, lambda n: n >= expected, timeout=10, what=f"{expected} messages on {queue}"
        )
        return ids
    finally:
        await connection.close()


async def test_sweeper_publishes_rows_a_crash_left_behind(
    settings: Settings, engine: AsyncEngine, broker: Broker, probe: Probe
) -> None:
    messages = [_command(settings) for _ in range(3)]
    async with transaction(engine) as conn:
        await enqueue(conn, messages)  # committed, never published: as if the process died here
    relay = Relay(engine, broker, grace_seconds=0.0)

    assert await relay.sweep_once() == 3

    assert await probe.count("warren.outbox") == 0
    ids = await _drain_ids(settings, settings.topology.pool_queue("payments"), 3)
    assert sorted(ids) == sorted(str(m.message_id) for m in messages)


async def test_sweeper_leaves_young_rows_to_their_committer(
    settings: Settings, engine: AsyncEngine, broker: Broker, probe: Probe
) -> None:
    async with transaction(engine) as conn:
        await enqueue(conn, [_command(settings)])
    relay = Relay(engine, broker, grace_seconds=3600)

    assert await relay.sweep_once() == 0
    assert await probe.count("warren.outbox") == 1


async def test_rows_committed_out_of_id_order_are_all_published(
    settings: Settings, engine: AsyncEngine, broker: Broker, probe: Probe
) -> None:
    """The later id commits first; a sweep in between must not skip the earlier id later."""
    relay = Relay(engine, broker, grace_seconds=0.0)
    first, second = _command(settings), _command(settings)
    first_inserted = asyncio.Event()
    release_first = asyncio.Event()

    async def slow_transaction() -> None:
        async with transaction(engine) as conn:
            await enqueue(conn, [first])  # takes the lower id
            first_inserted.set()
            await release_first.wait()

    slow = asyncio.create_task(slow_transaction())
    await first_inserted.wait()
    async with transaction(engine) as conn:
        rows = await enqueue(conn, [second])  # higher id, committed first
    assert rows[0].id > 0

    assert await relay.sweep_once() == 1  # only the committed one is visible
    release_first.set()
    await slow
    assert await relay.sweep_once() == 1  # the lower id, committed later, is not skipped

    assert await probe.count("warren.outbox") == 0
    ids = await _drain_ids(settings, settings.topology.pool_queue("payments"), 2)
    assert sorted(ids) == sorted([str(first.message_id), str(second.message_id)])


async def test_publish_declares_a_missing_pool_queue_instead_of_losing_the_command(
    settings: Settings, engine: AsyncEngine, broker: Broker
) -> None:
    async with transaction(engine) as conn:
        rows = await enqueue(conn, [_command(settings, pool="brand_new_pool")])
    relay = Relay(engine, broker)

    await relay.publish_committed(rows)
    await relay.flush()

    ids = await _drain_ids(settings, settings.topology.pool_queue("brand_new_pool"), 1)
    assert ids == [str(rows[0].message.message_id)]
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM warren.outbox")) == 0


async def test_a_batch_published_at_once_arrives_whole_persistent_and_with_its_properties(
    settings: Settings, engine: AsyncEngine, broker: Broker, probe: Probe
) -> None:
    # Publishes go straight to the channel, their frames gathered into few socket writes.
    messages = [_command(settings) for _ in range(300)]
    async with transaction(engine) as conn:
        await enqueue(conn, messages)
    relay = Relay(engine, broker, grace_seconds=0.0, batch_size=300)

    assert await relay.sweep_once() == 300

    assert await probe.count("warren.outbox") == 0
    received: list[aio_pika.abc.AbstractIncomingMessage] = []
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(settings.topology.pool_queue("payments"))
        async with asyncio.timeout(60), queue.iterator() as deliveries:
            async for message in deliveries:
                await message.ack()
                received.append(message)
                if len(received) == 300:
                    break
    finally:
        await connection.close()
    assert sorted(str(m.message_id) for m in received) == sorted(
        str(m.message_id) for m in messages
    )
    for message in received:
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.content_type == "application/json"
        assert message.body == f'{{"id": "{message.message_id}"}}'.encode()


async def test_a_broker_that_reads_nothing_more_gets_nothing_more_and_the_rows_wait(
    settings: Settings,
    engine: AsyncEngine,
    broker: Broker,
    probe: Probe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if a memory alarm had stopped RabbitMQ reading: more than the bound waits unsent.
    monkeypatch.setattr(broker._wire, "unsent_bytes", lambda: broker_module.MAX_UNSENT_BYTES + 1)
    async with transaction(engine) as conn:
        await enqueue(conn, [_command(settings) for _ in range(3)])
    relay = Relay(engine, broker, grace_seconds=0.0)

    assert await relay.sweep_once() == 0
    assert await probe.count("warren.outbox") == 3  # kept for a later sweep

    monkeypatch.undo()  # the alarm clears
    assert await relay.sweep_once() == 3
    assert await probe.count("warren.outbox") == 0
