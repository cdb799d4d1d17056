"""The shared consumer on a real queue: what happens to a message whose handler has a bug."""

from __future__ import annotations

from functools import partial

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from orchestrator.config import Settings
from orchestrator.messaging.broker import Broker
from orchestrator.messaging.consumer import Consumer
from tests.support.probes import Probe
from tests.support.publish import publish
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.mark.warren_settings(delivery_limit=2)
async def test_a_handler_bug_hands_the_message_back_until_the_delivery_limit_parks_it(
    settings: Settings, probe: Probe
) -> None:
    broker = Broker(settings.amqp_url, settings.topology)
    await broker.connect()
    deliveries = 0

    async def buggy(message: AbstractIncomingMessage) -> None:
        nonlocal deliveries
        deliveries += 1
        raise RuntimeError("a bug in the handler")

    consumer = Consumer(
        broker, partial(settings.topology.declare_pool, pool="buggy"), buggy, prefetch=1
    )
    await consumer.start()
    try:
        message = aio_pika.Message(b"{}", message_id="m-1")
        await publish(settings.amqp_url, settings.topology.commands_exchange, "buggy", message)

        async def parked() -> int:
            return (await probe.queue(settings.topology.dead_letter_queue))[0]

        assert (
            await wait_for(
                parked, lambda n: n == 1, timeout=20, what="the message to be dead-lettered"
            )
            == 1
        )
        assert deliveries == 3  # the first delivery and two redeliveries: the limit is 2
        assert (await probe.queue(settings.topology.pool_queue("buggy")))[0] == 0
        assert consumer.in_flight == 0  # nothing wedged
    finally:
        await consumer.stop(grace_seconds=5)
        await broker.close()
