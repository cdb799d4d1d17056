"""Poison messages: parked in the dead-letter queue with their reason, acked, nothing else stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import msgspec
import pytest
from sqlalchemy import text

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
from orchestrator.persistence import dead_letters
from orchestrator.service.orchestrator import Orchestrator
from tests.support.messages import success_reply
from tests.support.probes import Probe
from tests.support.publish import publish
from tests.support.waiting import tasks_alive, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def orchestrator(settings: Settings, probe: Probe) -> AsyncIterator[Orchestrator]:
    service = Orchestrator(settings)
    stopping = asyncio.Event()
    task = asyncio.create_task(service.run(stopping))
    await probe.wait_consumers(settings.topology.orchestrator_queue, alive=tasks_alive(task))
    yield service
    stopping.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _dead_letters(probe: Probe, expected: int) -> list[dict[str, Any]]:
    """Rows the orchestrator's dead-letter recorder wrote."""

    async def rows() -> list[dict[str, Any]]:
        async with probe.engine.connect() as conn:
            result = await conn.execute(text("SELECT * FROM warren.dead_letters ORDER BY id"))
            return [dict(r._mapping) for r in result]

    return await wait_for(
        rows, lambda found: len(found) >= expected, timeout=15, what="dead letters"
    )


async def _dead_letter_of(settings: Settings, probe: Probe, body: bytes) -> dict[str, Any]:
    """Publish `body` to the replies exchange; return the one dead letter it becomes."""
    message = aio_pika.Message(body, message_id="poison-1")
    await publish(settings.amqp_url, settings.topology.replies_exchange, REPLY_ROUTING_KEY, message)
    [letter] = await _dead_letters(probe, 1)
    return letter


@pytest.mark.usefixtures("orchestrator")
async def test_undecodable_message_is_dead_lettered_with_its_reason(
    settings: Settings, probe: Probe
) -> None:
    letter = await _dead_letter_of(settings, probe, b"\x00 definitely not json")

    assert letter["body"] == b"\x00 definitely not json"
    assert letter["kind"] is None
    assert "undecodable message" in letter["reason"]
    assert letter["origin_exchange"] == settings.topology.replies_exchange
    assert letter["origin_routing_key"] == REPLY_ROUTING_KEY
    ready, _ = await probe.queue(settings.topology.orchestrator_queue)
    assert ready == 0
    dlq_ready, _ = await probe.queue(settings.topology.dead_letter_queue)
    assert dlq_ready == 0  # recorded, then acked


@pytest.mark.usefixtures("orchestrator")
async def test_copies_of_one_message_on_the_wire_are_one_dead_letter(
    settings: Settings, probe: Probe, caplog: pytest.LogCaptureFixture
) -> None:
    """The outbox publishes at least once: two copies of one message that are both parked (two
    copies of a command at the delivery limit, say) are one dead letter, recorded once."""
    caplog.set_level(logging.INFO, logger="orchestrator.service.dead_letters")
    copies = [aio_pika.Message(b"not json", message_id="copy-1") for _ in range(2)]
    await publish(settings.amqp_url, settings.topology.replies_exchange, REPLY_ROUTING_KEY, *copies)

    async def second_copy_seen() -> bool:
        return "recorded already" in caplog.text

    await wait_for(second_copy_seen, timeout=30, what="the second copy at the recorder")
    letters = await _dead_letters(probe, 1)
    assert [letter["message_id"] for letter in letters] == ["copy-1"]


@pytest.mark.usefixtures("orchestrator")
async def test_reply_for_an_unknown_instance_is_dead_lettered(
    settings: Settings, probe: Probe
) -> None:
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
    letter = await _dead_letter_of(settings, probe, encode(reply))

    assert "InstanceNotFound" in letter["reason"]
    assert letter["kind"] == "reply"
    assert letter["instance_id"] == reply.instance_id


@pytest.mark.usefixtures("orchestrator")
async def test_unsupported_envelope_version_is_dead_lettered(
    settings: Settings, probe: Probe
) -> None:
    letter = await _dead_letter_of(settings, probe, b'{"kind": "reply", "v": 99}')

    assert "unsupported envelope version 99" in letter["reason"]


@pytest.mark.usefixtures("orchestrator")
async def test_a_reply_in_a_payload_version_newer_than_known_is_dead_lettered(
    settings: Settings, probe: Probe
) -> None:
    reply = success_reply(saga="order", instance_id=str(new_message_id()), step="reserve_credit")
    newer = msgspec.structs.replace(reply, payload_version=2)

    letter = await _dead_letter_of(settings, probe, encode(newer))

    assert letter["reason"].startswith(
        "'reserve_credit' payload version 2 is newer than any this process knows (newest: 1)"
    )
    assert letter["kind"] == "reply"


@pytest.mark.usefixtures("orchestrator")
async def test_replaying_a_dead_lettered_reply_moves_its_instance_on(
    settings: Settings, probe: Probe
) -> None:
    from litestar.testing import AsyncTestClient

    from orchestrator.api.app import create_app

    async with AsyncTestClient(app=create_app(settings)) as client:
        started = (
            await client.post("/v1/sagas/order", json={"input": {"order_id": "R", "amount": 1}})
        ).json()
        reply = success_reply(
            saga="order", instance_id=started["id"], step="reserve_credit", result={"reserved": 1}
        )
        async with probe.engine.begin() as conn:  # as the recorder would have stored it
            letter_id = await conn.scalar(
                text(
                    "INSERT INTO warren.dead_letters (message_id, kind, instance_id, reason, "
                    "origin_exchange, origin_routing_key, body) VALUES "
                    "(:m, 'reply', :i, 'delivered too many times', :e, 'reply', :b) RETURNING id"
                ),
                {
                    "m": str(reply.id),
                    "i": started["id"],
                    "e": settings.topology.replies_exchange,
                    "b": encode(reply),
                },
            )

        replayed = await client.post(f"/v1/dead-letters/{letter_id}/replay")
        missing = await client.post("/v1/dead-letters/999999/replay")

        assert replayed.status_code == 200
        assert replayed.json()["replayed_at"] is not None
        assert missing.status_code == 404
        assert missing.json()["type"] == "urn:warren:problem:dead-letter-not-found"

        async def credit_reserved() -> str:
            body = (await client.get(f"/v1/instances/{started['id']}")).json()
            return str(body["steps"][0]["status"])

        assert (
            await wait_for(credit_reserved, lambda s: s == "succeeded", what="the replayed reply")
            == "succeeded"
        )


@pytest.mark.usefixtures("orchestrator")
async def test_a_letter_rabbitmq_dead_lettered_from_the_default_exchange_keeps_its_address(
    settings: Settings, probe: Probe
) -> None:
    """`x-death` says exchange "" for a message published straight to a queue: recorded as
    that (not null), so replay sends it back to the queue through the default exchange."""
    queue_name = settings.topology.pool_queue("payments")
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await settings.topology.declare_pool(channel, "payments")
        await channel.default_exchange.publish(
            aio_pika.Message(b"straight in", message_id="direct-1"), queue_name
        )
        message = await wait_for(lambda: queue.get(fail=False), what="the message")
        assert message is not None
        await message.reject(requeue=False)  # RabbitMQ dead-letters it with an x-death record
    finally:
        await connection.close()

    [letter] = await _dead_letters(probe, 1)

    assert "rejected" in letter["reason"]
    assert (letter["origin_exchange"], letter["origin_routing_key"], letter["origin_queue"]) == (
        "",
        queue_name,
        queue_name,
    )
    async with probe.engine.begin() as conn:
        await dead_letters.replay(conn, letter["id"])
    # The orchestrator's outbox sweeper publishes it: it is back in its queue.
    await wait_for(lambda: probe.queue(queue_name), lambda q: q[0] == 1, what="the replay")
