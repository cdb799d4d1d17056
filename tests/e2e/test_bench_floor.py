"""The floor (bench/floor) completes every saga with each step's effect exactly once, and its
inboxes drop copies of messages already handled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika
import asyncpg
import msgspec
import pytest

from bench import runner
from bench.floor import pipeline
from bench.floor.run import create_schema, floor_processes, run_sagas
from tests.support.bench import run_bench
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(120)
def test_the_floor_completes_every_saga_with_each_effect_once_and_cleans_up() -> None:
    figures, _ = run_bench("bench.floor", "--sagas", "100", "--warmup", "10", timeout=110)

    assert figures["statuses"] == {"completed": 100}
    assert figures["effects"] == {"rows": 3 * 110, "duplicates": 0, "missing": 0}
    assert figures["sagas_per_second"] > 0
    assert figures["end_to_end"]["count"] == 100
    assert set(figures["cpu_ms_per_saga"]) == {"orchestrator", "worker", "postgres", "rabbitmq"}

    async def database_exists() -> bool:
        admin = await asyncpg.connect(runner.SERVERS.admin_dsn)
        try:
            name = figures["database"]
            return bool(await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
        finally:
            await admin.close()

    assert not asyncio.run(database_exists())


async def _send_copies_then_a_marker(amqp_url: str, sagas: int) -> None:
    """Copies of every command and reply of `sagas` sagas, as a redelivery or a relay after a
    crash would send them, then one new command (saga -1, no row) behind them in the queue."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        for exchange_name, kind in ((pipeline.COMMANDS, "c"), (pipeline.REPLIES, "r")):
            exchange = await channel.get_exchange(exchange_name, ensure=False)
            for saga in range(sagas):
                for step in range(pipeline.STEPS):
                    body = msgspec.msgpack.encode(pipeline.Body(saga, step))
                    message = aio_pika.Message(body, message_id=f"{kind}:{saga}:{step}")
                    await exchange.publish(message, exchange_name, mandatory=True)
        commands = await channel.get_exchange(pipeline.COMMANDS, ensure=False)
        marker = aio_pika.Message(msgspec.msgpack.encode(pipeline.Body(-1, 0)), message_id="m")
        await commands.publish(marker, pipeline.COMMANDS, mandatory=True)
    finally:
        await connection.close()


@pytest.mark.timeout(120)
def test_the_floor_drops_copies_of_commands_and_replies(tmp_path: Path) -> None:
    sagas = 20
    with runner.scratch_servers() as (database_url, amqp_url):
        asyncio.run(create_schema(database_url))
        with floor_processes(database_url, amqp_url, tmp_path) as procs:

            async def scenario() -> list[asyncpg.Record]:
                db = await asyncpg.connect(database_url)
                try:
                    await run_sagas(procs, db, sagas, 0, limit=60)
                    await _send_copies_then_a_marker(amqp_url, sagas)
                    # One consumer, in order: once the marker's effect is there, every copy
                    # before it was handled (and the replies' copies went first: the marker's
                    # reply lands behind them).
                    await wait_for(
                        lambda: db.fetchval(
                            "SELECT count(*) FROM floor.orchestrator_inbox WHERE message_id = $1",
                            "r:-1:0",
                        ),
                        timeout=30,
                        what="the marker's reply to be handled",
                    )
                    rows: list[asyncpg.Record] = await db.fetch(
                        "SELECT saga_id, step, count(*) AS n FROM floor.ledger "
                        "GROUP BY saga_id, step ORDER BY saga_id, step"
                    )
                    assert (
                        await db.fetchval(
                            "SELECT count(*) FROM floor.sagas WHERE status = 'completed' AND step = $1",
                            pipeline.STEPS,
                        )
                        == sagas
                    )
                    return rows
                finally:
                    await db.close()

            rows = asyncio.run(scenario())
            for proc in procs:
                proc.alive()

    expected = [(-1, 0, 1)] + [(s, k, 1) for s in range(sagas) for k in range(pipeline.STEPS)]
    assert [(r["saga_id"], r["step"], r["n"]) for r in rows] == expected
