"""A transaction is never reported committed when its driver transaction is not the one it
began.

SQLAlchemy's asyncpg adapter forgets its transaction when it finds the connection closed, and
its COMMIT then does nothing, silently; the pool's reset rolls back what was written. A caller
that went on would publish what it never committed. `transaction` checks, before it commits,
that the driver's transaction is still the one it began.

A transaction cancelled half-way (aiormq cancels a consumer's task when its channel closes)
must not leave its connection in the pool half-open: asyncpg would nest every later
transaction on it in the one that never ended, as savepoints, and each "commit" would only
release a savepoint. `create_engine` discards such a connection."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from orchestrator.errors import StorageError
from orchestrator.storage.database import create_engine, driver, transaction
from tests.chaos.proxy import FaultyProxy
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from orchestrator.config import Settings

CLAIM = "INSERT INTO warren.inbox (consumer, message_id) VALUES ('guard', $1)"


async def _claimed(engine: AsyncEngine, message_id: uuid.UUID) -> bool:
    async with engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM warren.inbox WHERE consumer = 'guard' AND message_id = :m"),
            {"m": message_id},
        )
    return bool(found)


async def test_a_transaction_the_driver_adapter_forgot_is_a_storage_error(
    engine: AsyncEngine,
) -> None:
    """What the adapter does when it finds the connection closed (its `_handle_exception`):
    without the check, `transaction` would return as if all had been committed."""
    message_id = uuid.uuid4()

    async def forgotten() -> None:
        async with transaction(engine) as conn:
            await (await driver(conn)).execute(CLAIM, message_id)
            pooled = await conn.get_raw_connection()
            pooled.dbapi_connection._transaction = None  # type: ignore[union-attr]

    with pytest.raises(StorageError, match="nothing of it was committed"):
        await forgotten()
    assert not await _claimed(engine, message_id)


async def test_a_connection_ended_under_a_transaction_fails_it(engine: AsyncEngine) -> None:
    message_id = uuid.uuid4()

    async def ended() -> None:
        async with transaction(engine) as conn:
            raw = await driver(conn)
            await raw.execute(CLAIM, message_id)
            pid = await raw.fetchval("SELECT pg_backend_pid()")
            async with engine.connect() as other:  # as pg_terminate does to every backend
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    with pytest.raises(StorageError):
        await ended()
    assert not await _claimed(engine, message_id)


async def test_a_healthy_transaction_commits(engine: AsyncEngine) -> None:
    message_id = uuid.uuid4()
    async with transaction(engine) as conn:
        await (await driver(conn)).execute(CLAIM, message_id)
    assert await _claimed(engine, message_id)
    async with transaction(engine):
        pass  # an empty transaction commits too


LATENCY_SECONDS = 3.0
"""Each way, through the proxy: the window in which BEGIN has run on the server and its
answer has not reached the client yet."""


async def _open_transactions(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        found = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            )
        )
    return int(found or 0)


async def test_a_transaction_cancelled_in_its_begin_leaves_no_connection_that_only_pretends(
    settings: Settings, engine: AsyncEngine
) -> None:
    """BEGIN has run on the server, the task is cancelled before its answer arrives: asyncpg
    still counts that transaction as open. The next transaction on the connection must commit
    for real (before the fix it was a savepoint in the cancelled one, and its commit vanished
    with the connection)."""
    url = make_url(settings.database_url)
    proxy = FaultyProxy("postgres", url.port or 5432)
    await proxy.start()
    proxied = create_engine(url.set(port=proxy.port).render_as_string(hide_password=False))
    message_id = uuid.uuid4()

    async def begin_only() -> None:
        async with transaction(proxied):
            raise AssertionError("cancelled in BEGIN, the body never runs")

    try:
        async with transaction(proxied):
            pass  # the pool's connection is open: BEGIN is all the next transaction sends
        proxy.delay(300, latency=LATENCY_SECONDS)
        cancelled = asyncio.create_task(begin_only())
        await wait_for(
            lambda: _open_transactions(engine),
            timeout=60,
            what="the BEGIN sent through the slow proxy to have run on the server",
        )
        assert not cancelled.done()  # its answer is still on the way
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        proxy.heal()

        async with transaction(proxied) as conn:
            await (await driver(conn)).execute(CLAIM, message_id)
        assert await _claimed(engine, message_id), "the commit was a savepoint's release"
        await wait_for(
            lambda: _open_transactions(engine),
            lambda open_now: open_now == 0,
            timeout=60,
            what="no connection left in a transaction that never ends",
        )
    finally:
        await proxied.dispose()
        await proxy.close()


async def test_a_transaction_cancelled_in_a_statement_commits_nothing_and_holds_no_lock(
    engine: AsyncEngine,
) -> None:
    """Cancelled while a statement waits for a lock, after it wrote a row: nothing of it is
    committed, now or by a later transaction on the same connection, and no connection stays
    in it. (SQLAlchemy rolls this case back by itself; the pool hooks are for a cut-off
    BEGIN, above. This keeps the neighbouring case honest.)"""
    cancelled_id = uuid.uuid4()

    async def claim_then_wait() -> None:
        async with transaction(engine) as conn:
            raw = await driver(conn)
            await raw.execute(CLAIM, cancelled_id)
            await raw.execute("SELECT pg_advisory_xact_lock(4242)")  # held below: waits

    async def waiting_for_the_lock() -> int:
        async with engine.connect() as conn:
            found = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"
                )
            )
        return int(found or 0)

    async with engine.connect() as holder:
        await holder.execute(text("SELECT pg_advisory_lock(4242)"))
        try:
            task = asyncio.create_task(claim_then_wait())
            await wait_for(waiting_for_the_lock, timeout=60, what="the statement to wait")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await holder.execute(text("SELECT pg_advisory_unlock(4242)"))
            await holder.commit()

    await wait_for(
        lambda: _open_transactions(engine),
        lambda open_now: open_now == 0,
        timeout=60,
        what="no connection left in the cancelled transaction",
    )
    later = [uuid.uuid4() for _ in range(3)]  # one transaction per connection of the pool
    for message_id in later:
        async with transaction(engine) as conn:
            await (await driver(conn)).execute(CLAIM, message_id)
    assert all([await _claimed(engine, message_id) for message_id in later])
    assert not await _claimed(engine, cancelled_id)
