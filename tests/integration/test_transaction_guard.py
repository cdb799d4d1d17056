"""A transaction is never reported committed when its driver transaction is not the one it
began.

SQLAlchemy's asyncpg adapter forgets its transaction when it finds the connection closed, and
its COMMIT then does nothing, silently; the pool's reset rolls back what was written. A caller
that went on would publish what it never committed. `transaction` checks, before it commits,
that the driver's transaction is still the one it began."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

from orchestrator.errors import StorageError
from orchestrator.storage.database import driver, transaction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

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
