"""What the floor's two processes share: the schema, the queues, batched consuming and
confirmed publishing of a batch."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aio_pika
import msgspec
from aio_pika import DeliveryMode, Message
from pamqp.commands import Basic

if TYPE_CHECKING:
    from collections.abc import Sequence

    import asyncpg
    from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

BATCH = 128
"""At most this many messages per transaction and per round of confirms."""
PREFETCH = 2 * BATCH
STEPS = 3
COMMANDS = "floor.commands"
"""Exchange and queue of the worker's commands (and of the orchestrator's replies below)."""
REPLIES = "floor.replies"

SCHEMA = """
CREATE SCHEMA floor;
CREATE TABLE floor.sagas (
    id bigint PRIMARY KEY,
    step int NOT NULL,               -- the step whose reply is awaited; STEPS once completed
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE floor.orchestrator_inbox (message_id text PRIMARY KEY);
CREATE TABLE floor.orchestrator_outbox (
    id bigserial PRIMARY KEY, message_id text NOT NULL, saga_id bigint NOT NULL, step int NOT NULL
);
CREATE TABLE floor.worker_inbox (message_id text PRIMARY KEY);
-- The effects: no unique key, so that a step done twice shows as two rows.
CREATE TABLE floor.ledger (
    id bigserial PRIMARY KEY, saga_id bigint NOT NULL, step int NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE floor.worker_outbox (
    id bigserial PRIMARY KEY, message_id text NOT NULL, saga_id bigint NOT NULL, step int NOT NULL
);
"""


class Body(msgspec.Struct, array_like=True):
    """A command (do `step` of saga `saga`) or its reply (`step` done)."""

    saga: int
    step: int


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Body).decode


def decode(messages: Sequence[AbstractIncomingMessage]) -> tuple[list[str], list[int], list[int]]:
    """The batch as three arrays (message ids, saga ids, steps), copies within it dropped."""
    seen: dict[str, Body] = {}
    for message in messages:
        seen.setdefault(message.message_id or "", _decode(message.body))
    bodies = list(seen.values())
    return list(seen), [b.saga for b in bodies], [b.step for b in bodies]


async def declare(channel: AbstractChannel) -> dict[str, AbstractExchange]:
    """Both exchanges and quorum queues (idempotent: either process may come first)."""
    exchanges = {}
    for name in (COMMANDS, REPLIES):
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT, durable=True)
        queue = await channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, routing_key=name)
        exchanges[name] = exchange
    return exchanges


async def publish(exchange: AbstractExchange, rows: Sequence[asyncpg.Record]) -> list[int]:
    """Publish outbox rows (id, message_id, saga_id, step), persistent and mandatory, and wait
    once for all their confirms; the ids of the rows the broker confirmed (all, or it raises)."""
    if not rows:
        return []
    sends = [
        exchange.publish(
            Message(
                _encode(Body(row["saga_id"], row["step"])),
                message_id=row["message_id"],
                delivery_mode=DeliveryMode.PERSISTENT,
            ),
            exchange.name,
            mandatory=True,
        )
        for row in rows
    ]
    confirms = await asyncio.gather(*sends)
    if not all(isinstance(confirm, Basic.Ack) for confirm in confirms):
        raise RuntimeError(f"the broker refused some of {len(rows)} messages")
    return [row["id"] for row in rows]


class Batches:
    """Deliveries of one queue, handed out in batches of what has arrived (at least one, at
    most BATCH, never waiting for more), in delivery order: a multiple ack of a batch's last
    delivery acknowledges exactly the batch."""

    def __init__(self) -> None:
        self._arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self._arrived.put_nowait(message)

    async def next(self) -> list[AbstractIncomingMessage]:
        batch = [await self._arrived.get()]
        while len(batch) < BATCH and not self._arrived.empty():
            batch.append(self._arrived.get_nowait())
        return batch


async def consume(channel: AbstractChannel, queue_name: str) -> Batches:
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await channel.get_queue(queue_name, ensure=False)
    batches = Batches()
    await queue.consume(batches.on_message)
    return batches


async def connect(amqp_url: str) -> tuple[aio_pika.abc.AbstractConnection, AbstractChannel]:
    """A connection and its publishing channel (confirms on), both queues declared."""
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    await declare(channel)
    return connection, channel


def ready() -> None:
    """Tell the bench (reading our stdout) that we consume."""
    print("ready", flush=True)


async def relay_leftovers(db: asyncpg.Connection, outbox: str, exchange: AbstractExchange) -> int:
    """Publish what a crash left in `outbox` (committed, maybe never confirmed), then delete it.
    The receivers' inboxes drop the copies of what had gone out."""
    rows = await db.fetch(f"SELECT id, message_id, saga_id, step FROM {outbox} ORDER BY id")  # noqa: S608
    for start in range(0, len(rows), BATCH):
        done = await publish(exchange, rows[start : start + BATCH])
        await db.execute(f"DELETE FROM {outbox} WHERE id = ANY($1::bigint[])", done)  # noqa: S608
    return len(rows)
