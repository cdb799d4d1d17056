"""Poison messages: parked in the dead-letter queue with their reason, acked, nothing else stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aio_pika
import pytest

from orchestrator.config import Settings
from orchestrator.messaging.envelope import (
    Phase,
    Reply,
    ReplyPayload,
    encode,
    new_message_id,
    utcnow,
)
from orchestrator.messaging.topology import REPLY_ROUTING_KEY
from orchestrator.service.orchestrator import Orchestrator
from tests.support.probes import Probe
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def orchestrator(settings: Settings, probe: Probe) -> AsyncIterator[Orchestrator]:
    service = Orchestrator(settings)
    stopping = asyncio.Event()
    task = asyncio.create_task(service.run(stopping))
    await probe.wait_consumers(settings.topology.orchestrator_queue)
    yield service
    stopping.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _publish_reply_body(settings: Settings, body: bytes) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(settings.topology.replies_exchange)
        await exchange.publish(aio_pika.Message(body, message_id="poison-1"), REPLY_ROUTING_KEY)
    finally:
        await connection.close()


async def _dead_letters(
    settings: Settings, expected: int
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(settings.topology.dead_letter_queue)
        found: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def take() -> int:
            message = await queue.get(fail=False)
            if message is not None:
                found.append(message)
                await message.ack()
            return len(found)

        await wait_for(take, lambda n: n >= expected, timeout=15, what="dead letters")
        return found
    finally:
        await connection.close()


@pytest.mark.usefixtures("orchestrator")
async def test_undecodable_message_is_dead_lettered_with_its_reason(
    settings: Settings, probe: Probe
) -> None:
    await _publish_reply_body(settings, b"\x00 definitely not json")

    [letter] = await _dead_letters(settings, 1)

    assert letter.body == b"\x00 definitely not json"
    assert "undecodable message" in str(letter.headers["x-warren-reason"])
    assert letter.headers["x-warren-origin-exchange"] == settings.topology.replies_exchange
    ready, _ = await probe.queue(settings.topology.orchestrator_queue)
    assert ready == 0


@pytest.mark.usefixtures("orchestrator")
async def test_reply_for_an_unknown_instance_is_dead_lettered(settings: Settings) -> None:
    reply = Reply(
        id=new_message_id(),
        saga="order",
        saga_version=1,
        instance_id=new_message_id(),
        step="reserve_credit",
        phase=Phase.FORWARD,
        command="reserve_credit",
        attempt=1,
        seq=2,
        correlation_id=new_message_id(),
        timestamp=utcnow(),
        payload=ReplyPayload(ok=True, result={}),
    )
    await _publish_reply_body(settings, encode(reply))

    [letter] = await _dead_letters(settings, 1)

    assert "InstanceNotFound" in str(letter.headers["x-warren-reason"])


@pytest.mark.usefixtures("orchestrator")
async def test_unsupported_envelope_version_is_dead_lettered(settings: Settings) -> None:
    await _publish_reply_body(settings, b'{"kind": "reply", "v": 99}')

    [letter] = await _dead_letters(settings, 1)

    assert "unsupported envelope version 99" in str(letter.headers["x-warren-reason"])
