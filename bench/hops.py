"""The parts of one hop, measured alone: what a step's latency is made of on this machine.

    .venv/bin/python -m bench.hops [--rounds 300]

A hop (a worker's reply reaching the orchestrator, or a command reaching a worker) is: a
transaction on the sender's side (round trips to Postgres, and a commit that waits for the
WAL's fsync), a persistent publish to a quorum queue (the broker writes it to its log and
fsyncs before it confirms or delivers), the delivery, and the Python on both ends. This probe
times each of those alone, one at a time, on a scratch database and vhost, so that the bench's
hop times (`python -m bench`, `sequential.steps`) can be split into them:

- ``pg_round_trip``: ``SELECT 1`` on an asyncpg connection (prepared);
- ``pg_commit``: BEGIN, a one-row INSERT, COMMIT: three round trips and one fsync;
- ``pg_commit_batch``: BEGIN, INSERT of 32 rows in one statement, COMMIT;
- ``amqp_publish_confirm``: a persistent publish to a quorum queue until its confirm;
- ``amqp_publish_deliver``: the same publish until a consumer of the queue has it;
- ``amqp_round_trip``: a passive queue declare (one request and its answer, no disk).

Prints the p50 and p90 of each, in milliseconds, as JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import TYPE_CHECKING, Any

import aio_pika
import asyncpg

from bench.runner import log, machine_info, postgres_of, scratch_servers

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

QUEUE = "hops"


async def _timed(rounds: int, once: Callable[[], Awaitable[None]]) -> dict[str, float]:
    for _ in range(min(20, rounds)):  # warm up: prepared statements, connections
        await once()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await once()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p90_ms": round(samples[int(len(samples) * 0.9)], 3),
    }


async def _postgres(url: str, rounds: int) -> dict[str, dict[str, float]]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE hops (id uuid PRIMARY KEY, body text)")

        async def round_trip() -> None:
            await conn.fetchval("SELECT 1")

        async def commit() -> None:
            async with conn.transaction():
                await conn.execute("INSERT INTO hops VALUES ($1, 'x')", uuid.uuid4())

        async def commit_batch() -> None:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO hops SELECT unnest($1::uuid[]), 'x'",
                    [uuid.uuid4() for _ in range(32)],
                )

        return {
            "pg_round_trip": await _timed(rounds, round_trip),
            "pg_commit": await _timed(rounds, commit),
            "pg_commit_batch": await _timed(rounds, commit_batch),
        }
    finally:
        await conn.close()


async def _rabbitmq(url: str, rounds: int) -> dict[str, dict[str, float]]:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
        )
        arrived: asyncio.Queue[None] = asyncio.Queue()
        consumer_channel = await connection.channel()
        await consumer_channel.set_qos(prefetch_count=10)
        consumed = await consumer_channel.get_queue(QUEUE)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            arrived.put_nowait(None)

        def message() -> aio_pika.Message:
            return aio_pika.Message(b"{}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)

        async def confirm() -> None:
            await channel.default_exchange.publish(message(), QUEUE)

        async def deliver() -> None:
            await channel.default_exchange.publish(message(), QUEUE)
            await arrived.get()

        async def round_trip() -> None:
            await channel.declare_queue(QUEUE, passive=True)

        figures = {"amqp_round_trip": await _timed(rounds, round_trip)}
        await consumed.consume(on_message)
        figures["amqp_publish_deliver"] = await _timed(rounds, deliver)
        await consumer_channel.close()  # nobody consumes: only the confirm is waited for
        figures["amqp_publish_confirm"] = await _timed(rounds, confirm)
        await queue.purge()
        return figures
    finally:
        await connection.close()


async def _measure(database_url: str, amqp_url: str, rounds: int) -> dict[str, Any]:
    log(f"timing each part {rounds} times")
    figures = await _postgres(database_url, rounds)
    figures |= await _rabbitmq(amqp_url, rounds)
    connection = await asyncpg.connect(database_url)
    try:
        postgres = await postgres_of(connection, ("fsync", "synchronous_commit"))
    finally:
        await connection.close()
    return {"postgres": postgres, "parts": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    with scratch_servers() as (database_url, amqp_url):
        measured = asyncio.run(_measure(database_url, amqp_url, args.rounds))
    version, settings = measured["postgres"]
    figures = {"machine": machine_info(version, settings), "rounds": args.rounds}
    print(json.dumps(figures | {"parts": measured["parts"]}, indent=1))


if __name__ == "__main__":
    main()
