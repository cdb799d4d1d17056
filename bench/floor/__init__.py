"""The floor: the simplest pipeline with Warren's guarantees, for the order-3 shape.

One orchestrator process and one worker process, each a small asyncio program on aio-pika and
asyncpg directly (no Warren code, no SQLAlchemy, no history, tracing or metrics). A saga is
three steps: three commands and three replies. Every guarantee Warren keeps stays on:

- starts: the saga row and its first command (in the outbox) in one transaction;
- both sides consume in batches of what has arrived (at most 128 messages): one statement,
  run as its own transaction, records the batch in the inbox (duplicates are skipped), does the
  work (the orchestrator moves the saga rows on; the worker writes one effect row, the
  "ledger", per command) and writes the next messages into the outbox; then the batch is
  published, persistent and confirmed, with one wait for all confirms, and the deliveries are
  acknowledged with one multiple ack;
- the outbox rows of a confirmed batch are deleted by the next batch's statement; a process
  publishes the rows left over by a crash when it starts (the inbox drops the copies);
- quorum queues, Postgres's default fsync and synchronous_commit.

Tables live in the schema ``floor`` and queues and exchanges are named ``floor.*``: nothing
collides with Warren's. `bench.floor.run` starts the processes on a scratch database and vhost
and measures them; `python -m bench.floor` runs it alone, `python -m bench --floor` next to
Warren.
"""
