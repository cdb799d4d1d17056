"""Consumers come back after a lost broker connection (found by the chaos run, seed 7).

On a private RabbitMQ node behind our proxy: the shared server's connections are never touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import pytest

from orchestrator.messaging.broker import Broker
from orchestrator.messaging.consumer import Consumer
from orchestrator.messaging.topology import Topology
from tests.chaos.proxy import FaultyProxy
from tests.chaos.servers import Cleanup, PrivateRabbitMQ
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage

pytestmark = pytest.mark.e2e

T = TypeVar("T")


@pytest.fixture(scope="module")
def private_rabbit() -> Iterator[PrivateRabbitMQ]:
    cleanup = Cleanup()
    try:
        rabbit = PrivateRabbitMQ(cleanup)
        rabbit.start()
        yield rabbit
    finally:
        cleanup.run()


@pytest.fixture
async def proxy(private_rabbit: PrivateRabbitMQ) -> AsyncIterator[FaultyProxy]:
    proxy = FaultyProxy("amqp", private_rabbit.port)
    await proxy.start()
    yield proxy
    await proxy.close()


@dataclass
class DeadLetters:
    """A broker behind the proxy, a consumer of its dead-letter queue (not started) and what
    that consumer has seen."""

    broker: Broker
    consumer: Consumer
    seen: list[str | None]
    rabbit: PrivateRabbitMQ

    async def consumers(self) -> int:
        queues = await asyncio.to_thread(self.rabbit.list_queues)
        return queues.get(self.broker.topology.dead_letter_queue, (0, 0, 0))[2]

    async def received(self, message_id: str) -> None:
        await self.broker.publish_dead_letter(b"x", message_id=message_id, headers={})
        await wait_for(lambda: _now(self.seen), timeout=30, what=f"message {message_id}")
        assert self.seen == [message_id]


@pytest.fixture
async def dead_letters(
    request: pytest.FixtureRequest, proxy: FaultyProxy, private_rabbit: PrivateRabbitMQ
) -> AsyncIterator[DeadLetters]:
    topology = Topology(namespace=request.node.name[-40:])
    broker = Broker(f"amqp://guest:guest@127.0.0.1:{proxy.port}/", topology)
    await broker.connect()
    seen: list[str | None] = []

    async def record(message: AbstractIncomingMessage) -> None:
        seen.append(message.message_id)

    consumer = Consumer(broker, topology.declare_dead_letters, record, prefetch=4)
    try:
        yield DeadLetters(broker, consumer, seen, private_rabbit)
    finally:
        await consumer.stop(1.0)
        await broker.close()


@pytest.mark.timeout(120)
async def test_the_dead_letter_consumer_is_restored_after_a_reconnect(
    proxy: FaultyProxy, dead_letters: DeadLetters
) -> None:
    await dead_letters.consumer.start()
    await wait_for(dead_letters.consumers, lambda n: n == 1, timeout=20, what="the consumer")
    accepted = proxy.connections_accepted
    proxy.reset()  # the connection is lost; aio-pika reconnects and restores consumers

    async def reconnected() -> bool:
        return proxy.connections_accepted > accepted and bool(proxy.links)

    await wait_for(reconnected, timeout=30, what="a new connection")
    await wait_for(
        dead_letters.consumers, lambda n: n == 1, timeout=30, what="the consumer to come back"
    )
    await dead_letters.received("after-reconnect")


@pytest.mark.timeout(120)
async def test_a_consumer_started_while_the_connection_is_down_subscribes_once_it_is_back(
    proxy: FaultyProxy, dead_letters: DeadLetters
) -> None:
    """A process (re)starting its consumers just as the connection is reset waits for aio-pika
    to reconnect instead of stopping (found by the chaos run: a worker restarted just before an
    AMQP reset exited with 'cannot open a channel')."""
    connection = dead_letters.broker.connection
    proxy.reset()
    await wait_for(
        lambda: _now(not connection.connected.is_set()),
        timeout=30,
        what="the client to notice the reset",
    )
    await dead_letters.consumer.start()  # before the fix: BrokerError, no channel could open

    await wait_for(dead_letters.consumers, lambda n: n >= 1, timeout=30, what="the consumer")
    await dead_letters.received("after-start")
    assert await dead_letters.consumers() == 1  # the failed try left no second subscription


async def _now(value: T) -> T:
    return value
