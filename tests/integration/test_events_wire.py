"""Events on the real broker: published from a service's outbox as CloudEvents (binary mode),
only when their transaction commits; unrouted events are fine; payloads in versions newer
than a worker knows are dead-lettered with that reason."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import msgspec
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from orchestrator.config import Settings
from orchestrator.messaging.broker import Broker
from orchestrator.messaging.cloudevents import from_amqp
from orchestrator.messaging.envelope import (
    Command,
    CommandPayload,
    Phase,
    encode,
    new_message_id,
    utcnow,
)
from orchestrator.messaging.relay import Relay
from orchestrator.storage.database import transaction
from tests.support.probes import Probe
from tests.support.publish import publish
from tests.support.waiting import tasks_alive, wait_for
from workers import StepContext, Worker, publish_event
from workers.runtime import WorkerRunner

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[Broker]:
    broker = Broker(settings.amqp_url, settings.topology)
    await broker.connect()
    yield broker
    await broker.close()


@pytest.fixture
async def listener(settings: Settings) -> AsyncIterator[AbstractQueue]:
    """A plain consumer's queue, bound to the events exchange for every payment event."""
    connection = await aio_pika.connect(settings.amqp_url)
    channel = await connection.channel()
    await settings.topology.declare_base(channel)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(settings.topology.events_exchange, routing_key="payment.#")
    yield queue
    await connection.close()


async def _take(queue: AbstractQueue) -> AbstractIncomingMessage:
    message = await wait_for(
        lambda: queue.get(fail=False, no_ack=True), what="an event on the listener's queue"
    )
    assert message is not None
    return message


async def test_an_event_is_published_when_its_transaction_commits_and_never_when_it_rolls_back(
    settings: Settings,
    engine: AsyncEngine,
    broker: Broker,
    listener: AbstractQueue,
    probe: Probe,
) -> None:
    topology = settings.topology
    async with AsyncSession(engine) as session:
        await publish_event(
            session, type="payment.refused", data={"order_id": "A"}, source="/p", topology=topology
        )
        await session.rollback()  # the business transaction fails: its event never existed
    async with transaction(engine) as conn:
        sent = await publish_event(
            conn,
            type="payment.captured",
            data={"order_id": "B", "amount": 12},
            source="/payments",
            subject="order-B",
            id="capture-1",
            dataversion=2,
            topology=topology,
        )
    assert await probe.count("warren.outbox") == 1

    published = await Relay(engine, broker, grace_seconds=0.0).sweep_once()

    assert published == 1
    assert await probe.count("warren.outbox") == 0
    message = await _take(listener)
    headers: dict[str, Any] = dict(message.headers or {})
    assert message.routing_key == "payment.captured"
    assert message.content_type == "application/json"
    assert msgspec.json.decode(message.body) == {"order_id": "B", "amount": 12}
    assert {k: v for k, v in headers.items() if k.startswith("ce-") and k != "ce-traceparent"} == {
        "ce-id": "capture-1",
        "ce-source": "/payments",
        "ce-type": "payment.captured",
        "ce-specversion": "1.0",
        "ce-time": sent.time.isoformat().replace("+00:00", "Z") if sent.time else None,
        "ce-subject": "order-B",
        "ce-dataversion": "2",
    }
    assert "ce-traceparent" not in headers  # made outside any trace
    assert from_amqp(message.body, headers, message.content_type) == sent
    assert await listener.get(fail=False) is None  # the rolled-back event: never sent


async def test_an_event_carries_the_trace_context_it_was_made_in(
    settings: Settings, engine: AsyncEngine, broker: Broker, listener: AbstractQueue
) -> None:
    made_in = trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=0x0AF7651916CD43DD8448EB211C80319C,
            span_id=0xB7AD6B7169203331,
            is_remote=False,
            trace_flags=trace.TraceFlags(1),
        )
    )
    with trace.use_span(made_in):
        async with transaction(engine) as conn:
            await publish_event(
                conn, type="payment.captured", data=1, source="/s", topology=settings.topology
            )

    await Relay(engine, broker, grace_seconds=0.0).sweep_once()

    headers = (await _take(listener)).headers or {}
    assert headers["ce-traceparent"] == TRACEPARENT  # the CloudEvents tracing extension
    assert headers["traceparent"] == TRACEPARENT  # W3C, continued by the publish span


async def test_an_event_nobody_listens_to_is_published_and_forgotten(
    settings: Settings, engine: AsyncEngine, broker: Broker, probe: Probe
) -> None:
    """No queue is bound for the type: publish/subscribe with no subscriber. The broker
    confirms it; neither the committer nor the sweeper keeps it, nothing raises."""
    relay = Relay(engine, broker, grace_seconds=0.0)
    async with transaction(engine) as conn:
        first = await publish_event(
            conn, type="parcel.lost", data={}, source="/shipping", topology=settings.topology
        )
    async with AsyncSession(engine) as session, session.begin():
        await publish_event(
            session, type="parcel.found", data=None, source="/shipping", topology=settings.topology
        )

    assert await relay.sweep_once() == 2
    assert await probe.count("warren.outbox") == 0
    assert first.type == "parcel.lost"


# ---- in a step handler ----------------------------------------------------------------------------

events_worker = Worker("events")


@events_worker.handler("capture_payment", pool="billing")
async def capture_payment(ctx: StepContext) -> dict[str, Any]:
    event = await ctx.publish_event(type="payment.captured", data={"order": ctx.input["order"]})
    if ctx.input.get("fail"):
        raise RuntimeError("the charge failed after the event was written")
    return {"event_id": event.id}


@pytest.fixture
async def billing_worker(settings: Settings, probe: Probe) -> AsyncIterator[None]:
    stopping = asyncio.Event()
    task = asyncio.create_task(WorkerRunner(events_worker, settings, concurrency=2).run(stopping))
    await probe.wait_consumers(settings.topology.pool_queue("billing"), alive=tasks_alive(task))
    yield
    stopping.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _command(name: str, input: Any, *, payload_version: int = 1) -> Command:
    instance_id = new_message_id()
    return Command(
        id=new_message_id(),
        saga="order",
        saga_version=1,
        instance_id=instance_id,
        step="capture",
        phase=Phase.FORWARD,
        command=name,
        attempt=1,
        seq=1,
        correlation_id=instance_id,
        timestamp=utcnow(),
        payload_version=payload_version,
        payload=CommandPayload(input=input, results={}, idempotency_key=f"{instance_id}:c"),
    )


async def _send(settings: Settings, command: Command) -> None:
    message = aio_pika.Message(encode(command), message_id=str(command.id))
    await publish(settings.amqp_url, settings.topology.commands_exchange, "billing", message)


@pytest.mark.warren_settings(outbox_grace_seconds=60.0)  # the sweeper stays out of it
@pytest.mark.usefixtures("billing_worker")
async def test_a_handler_publishes_an_event_with_its_step_and_only_when_it_succeeds(
    settings: Settings, listener: AbstractQueue, probe: Probe
) -> None:
    failing = _command("capture_payment", {"order": "F", "fail": True})
    await _send(settings, failing)
    await _send(settings, _command("capture_payment", {"order": "S"}))

    message = await _take(listener)  # right after the commit, not by the sweeper

    headers = dict(message.headers or {})
    assert msgspec.json.decode(message.body) == {"order": "S"}
    assert headers["ce-source"] == "warren/worker/billing"
    assert headers["ce-type"] == "payment.captured"
    # The failed attempt's event went with its savepoint: nothing else is, or will be, sent.
    assert await wait_for(lambda: probe.count("warren.outbox"), lambda n: n == 0) == 0
    assert await listener.get(fail=False) is None


@pytest.mark.usefixtures("billing_worker")
async def test_a_command_newer_than_the_worker_knows_is_dead_lettered_with_that_reason(
    settings: Settings, probe: Probe
) -> None:
    command = _command("capture_payment", {"order": "N"}, payload_version=3)

    await _send(settings, command)

    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        dlq = await channel.get_queue(settings.topology.dead_letter_queue)
        letter = await wait_for(lambda: dlq.get(fail=False, no_ack=True), what="the dead letter")
        assert letter is not None
    finally:
        await connection.close()
    reason = str((letter.headers or {})["x-warren-reason"])
    assert reason.startswith(
        "'capture_payment' payload version 3 is newer than any this process knows (newest: 1)"
    )
    assert letter.message_id == str(command.id)
    assert await probe.queue(settings.topology.pool_queue("billing")) == (0, 1)
