"""The hot path's statements go to the driver connection directly (storage.database.driver):
a connection the server dropped must fail as a retryable error and leave the pool, or it would
be handed out again and again (there is no pre-ping). One that asyncpg already knows is closed
is refused at checkout, and a fresh one is handed out instead."""

from __future__ import annotations

import contextlib
from uuid import uuid4

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.config import Settings
from orchestrator.errors import StorageError
from orchestrator.persistence import inbox
from orchestrator.storage.database import async_url, create_engine, driver, transaction

pytestmark = pytest.mark.integration


async def _terminate(settings: Settings, pid: int) -> None:
    dsn = async_url(settings.database_url).replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def _backend_pid(engine: AsyncEngine) -> int:
    async with transaction(engine) as conn:
        pid: int = await (await driver(conn)).fetchval("SELECT pg_backend_pid()")
    return pid


async def test_a_connection_dropped_between_transactions_is_replaced(settings: Settings) -> None:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        pid = await _backend_pid(engine)
        await _terminate(settings, pid)

        # Whether asyncpg has seen the close yet is a race: if it has, the pool refuses the
        # connection at checkout and this commits on a fresh one; if not, its first use fails.
        with contextlib.suppress(StorageError):
            async with transaction(engine) as conn:
                await inbox.claim_many(conn, "test", [uuid4()])

        fresh = uuid4()
        async with transaction(engine) as conn:
            assert await inbox.claim_many(conn, "test", [fresh]) == {fresh}
        assert await _backend_pid(engine) != pid
    finally:
        await engine.dispose()


async def test_a_connection_dropped_inside_a_transaction_is_replaced(settings: Settings) -> None:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        pids: list[int] = []

        async def claim_after_the_backend_died() -> None:
            async with transaction(engine) as conn:
                pids.append(await (await driver(conn)).fetchval("SELECT pg_backend_pid()"))
                await _terminate(settings, pids[0])
                await inbox.claim_many(conn, "test", [uuid4()])

        with pytest.raises(StorageError):
            await claim_after_the_backend_died()

        fresh = uuid4()
        async with transaction(engine) as conn:
            assert await inbox.claim_many(conn, "test", [fresh]) == {fresh}
        assert await _backend_pid(engine) != pids[0]
    finally:
        await engine.dispose()
