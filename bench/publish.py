"""The cost of publishing, alone: Warren's `Broker` publishing batches of commands, as the relay
does after a commit (all of a batch at once, each waiting for its confirm).

    .venv/bin/python -m bench.publish [--batches 80] [--size 128]

Publishes `--batches` batches of `--size` messages of 600 bytes, persistent and mandatory, to a
quorum queue nobody consumes, on a scratch vhost, after a few batches of warm-up. Prints, as
JSON on stdout, the CPU per message of this process (the publisher: aio-pika, aiormq, pamqp
and Warren's broker module) and of the RabbitMQ server (machine-wide), and the wall time per
message. Run it from two checkouts, one after the other, to compare their publish paths.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
import uvloop

from bench.runner import log, machine_info, postgres_of, scratch_servers, servers_cpu_seconds
from orchestrator.messaging.broker import Broker
from orchestrator.messaging.topology import Topology

POOL = "publish-bench"
BODY = b"x" * 600
WARMUP_BATCHES = 5


async def _measure(database_url: str, amqp_url: str, batches: int, size: int) -> dict[str, Any]:
    topology = Topology(namespace="bench")
    broker = Broker(amqp_url, topology)
    await broker.connect()
    try:
        channel = await broker.channel(prefetch=1)
        await topology.declare_pool(channel, POOL)
        await channel.close()

        async def one() -> None:
            await broker.publish(
                topology.commands_exchange,
                POOL,
                BODY,
                message_id=uuid.uuid4(),
                headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
            )

        async def batch() -> None:
            await asyncio.gather(*(one() for _ in range(size)))

        for _ in range(WARMUP_BATCHES):
            await batch()
        log(f"publishing {batches} batches of {size}")
        rabbitmq_before = servers_cpu_seconds()["rabbitmq"]
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        for _ in range(batches):
            await batch()
        cpu = time.process_time() - cpu_before
        wall = time.perf_counter() - wall_before
        rabbitmq = servers_cpu_seconds()["rabbitmq"] - rabbitmq_before
    finally:
        await broker.close()
    messages = batches * size
    connection = await asyncpg.connect(database_url)
    try:
        version, settings = await postgres_of(connection, ("fsync", "synchronous_commit"))
    finally:
        await connection.close()
    return {
        "machine": machine_info(version, settings),
        "messages": messages,
        "publisher_cpu_us_per_message": round(cpu / messages * 1e6, 1),
        "rabbitmq_cpu_us_per_message": round(rabbitmq / messages * 1e6, 1),
        "wall_us_per_message": round(wall / messages * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=80)
    parser.add_argument("--size", type=int, default=128, help="messages per batch")
    args = parser.parse_args()
    with scratch_servers() as (database_url, amqp_url):
        # uvloop, as Warren's processes run.
        figures = uvloop.run(_measure(database_url, amqp_url, args.batches, args.size))
    print(json.dumps({"batches": args.batches, "size": args.size} | figures))


if __name__ == "__main__":
    main()
