"""The floor's orchestrator process: starts sagas and moves them on as replies come.

    python -m bench.floor.orchestrator DATABASE_URL AMQP_URL

It reads lines ``start N FIRST`` on stdin (start sagas FIRST .. FIRST+N-1) and prints ``ready``
once it consumes the replies queue. Sagas move through floor.sagas; see bench/floor/__init__.py.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import uvloop

from bench.floor import pipeline

START = """
WITH started AS (
    INSERT INTO floor.sagas (id, step, status)
    SELECT id, 0, 'running' FROM unnest($1::bigint[]) AS id
    RETURNING id
), done AS (
    DELETE FROM floor.orchestrator_outbox WHERE id = ANY($2::bigint[])
)
INSERT INTO floor.orchestrator_outbox (message_id, saga_id, step)
SELECT 'c:' || id || ':0', id, 0 FROM started
RETURNING id, message_id, saga_id, step
"""

# One statement, so one transaction and one round trip per batch of replies: the inbox drops the
# replies seen before, the saga rows move on (only from the step the reply is for), the next
# commands go into the outbox, and the rows of the last confirmed batch go away.
REPLIES = f"""
WITH fresh AS (
    INSERT INTO floor.orchestrator_inbox (message_id)
    SELECT unnest($1::text[]) ON CONFLICT DO NOTHING
    RETURNING message_id
), replies AS (
    SELECT r.saga_id, r.step
    FROM unnest($1::text[], $2::bigint[], $3::int[]) AS r (message_id, saga_id, step)
    JOIN fresh USING (message_id)
), moved AS (
    UPDATE floor.sagas AS s
    SET step = r.step + 1,
        status = CASE WHEN r.step + 1 = {pipeline.STEPS} THEN 'completed' ELSE 'running' END,
        updated_at = clock_timestamp()
    FROM replies AS r
    WHERE s.id = r.saga_id AND s.step = r.step
    RETURNING s.id, s.step
), done AS (
    DELETE FROM floor.orchestrator_outbox WHERE id = ANY($4::bigint[])
)
INSERT INTO floor.orchestrator_outbox (message_id, saga_id, step)
SELECT 'c:' || id || ':' || step, id, step FROM moved WHERE step < {pipeline.STEPS}
RETURNING id, message_id, saga_id, step
"""  # noqa: S608 - constants only


class Orchestrator:
    def __init__(self, database_url: str, amqp_url: str) -> None:
        self.database_url = database_url
        self.amqp_url = amqp_url
        self.confirmed: list[int] = []
        """Outbox rows published and confirmed, for the next statement to delete."""

    def take_confirmed(self) -> list[int]:
        taken, self.confirmed = self.confirmed, []
        return taken

    async def run(self) -> None:
        # Two connections: starts and replies run side by side.
        replies_db = await asyncpg.connect(self.database_url)
        starts_db = await asyncpg.connect(self.database_url)
        connection, channel = await pipeline.connect(self.amqp_url)
        try:
            self.commands = await channel.get_exchange(pipeline.COMMANDS, ensure=False)
            await pipeline.relay_leftovers(replies_db, "floor.orchestrator_outbox", self.commands)
            consumer = await connection.channel()
            batches = await pipeline.consume(consumer, pipeline.REPLIES)
            pipeline.ready()
            await asyncio.gather(self.on_replies(replies_db, batches), self.on_stdin(starts_db))
        finally:
            await connection.close()
            await replies_db.close()
            await starts_db.close()

    async def on_replies(self, db: asyncpg.Connection, batches: pipeline.Batches) -> None:
        statement = await db.prepare(REPLIES)
        while True:
            batch = await batches.next()
            ids, sagas, steps = pipeline.decode(batch)
            rows = await statement.fetch(ids, sagas, steps, self.take_confirmed())
            self.confirmed += await pipeline.publish(self.commands, rows)
            await batch[-1].ack(multiple=True)

    async def on_stdin(self, db: asyncpg.Connection) -> None:
        statement = await db.prepare(START)
        while line := await asyncio.to_thread(sys.stdin.readline):
            word, count, first = line.split()
            if word != "start":
                raise ValueError(f"unknown request {line!r}")
            ids = list(range(int(first), int(first) + int(count)))
            for at in range(0, len(ids), pipeline.BATCH):
                rows = await statement.fetch(ids[at : at + pipeline.BATCH], self.take_confirmed())
                self.confirmed += await pipeline.publish(self.commands, rows)


def main() -> None:
    database_url, amqp_url = sys.argv[1:3]
    uvloop.run(Orchestrator(database_url, amqp_url).run())


if __name__ == "__main__":
    main()
