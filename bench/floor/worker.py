"""The floor's worker process: does each command's step once, and replies.

    python -m bench.floor.worker DATABASE_URL AMQP_URL

Prints ``ready`` once it consumes the commands queue. See bench/floor/__init__.py.
"""

from __future__ import annotations

import sys

import asyncpg
import uvloop

from bench.floor import pipeline

# One statement, so one transaction and one round trip per batch of commands: the inbox drops
# the commands seen before, each new one leaves its effect (a ledger row) and its reply in the
# outbox, and the rows of the last confirmed batch go away.
COMMANDS = """
WITH fresh AS (
    INSERT INTO floor.worker_inbox (message_id)
    SELECT unnest($1::text[]) ON CONFLICT DO NOTHING
    RETURNING message_id
), effects AS (
    INSERT INTO floor.ledger (saga_id, step)
    SELECT c.saga_id, c.step
    FROM unnest($1::text[], $2::bigint[], $3::int[]) AS c (message_id, saga_id, step)
    JOIN fresh USING (message_id)
    RETURNING saga_id, step
), done AS (
    DELETE FROM floor.worker_outbox WHERE id = ANY($4::bigint[])
)
INSERT INTO floor.worker_outbox (message_id, saga_id, step)
SELECT 'r:' || saga_id || ':' || step, saga_id, step FROM effects
RETURNING id, message_id, saga_id, step
"""


async def run(database_url: str, amqp_url: str) -> None:
    db = await asyncpg.connect(database_url)
    connection, channel = await pipeline.connect(amqp_url)
    try:
        replies = await channel.get_exchange(pipeline.REPLIES, ensure=False)
        await pipeline.relay_leftovers(db, "floor.worker_outbox", replies)
        batches = await pipeline.consume(await connection.channel(), pipeline.COMMANDS)
        statement = await db.prepare(COMMANDS)
        pipeline.ready()
        confirmed: list[int] = []
        while True:
            batch = await batches.next()
            rows = await statement.fetch(*pipeline.decode(batch), confirmed)
            confirmed = await pipeline.publish(replies, rows)
            await batch[-1].ack(multiple=True)
    finally:
        await connection.close()
        await db.close()


def main() -> None:
    database_url, amqp_url = sys.argv[1:3]
    uvloop.run(run(database_url, amqp_url))


if __name__ == "__main__":
    main()
