"""A starting process waits for a database that is not up yet, as it waits for RabbitMQ
(storage.database.patiently): a Postgres restarting while an orchestrator starts must not stop
it. The database comes up here as a proxy in front of the real one starts listening."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from sqlalchemy.engine import make_url

from orchestrator.config import Settings
from orchestrator.errors import DatabaseRefused, StorageError
from orchestrator.storage import database
from orchestrator.storage.database import create_engine, patiently, ping
from tests.chaos.proxy import FaultyProxy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_start_up_step_waits_for_the_database_to_come_up(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    url = make_url(settings.database_url)
    proxy = FaultyProxy("postgres", url.port or 5432, listen_port=_free_port())
    engine = create_engine(url.set(port=proxy.port).render_as_string(hide_password=False))
    tries = 0

    async def step() -> str:
        nonlocal tries
        tries += 1
        await ping(engine)
        return "bound"

    try:
        with caplog.at_level(logging.WARNING, logger=database.__name__):
            waiting = asyncio.create_task(patiently(step, what="binding", seconds=120))

            async def warned() -> bool:
                return any("not available yet" in r.getMessage() for r in caplog.records)

            await wait_for(warned, timeout=60, what="the first failed try, and its warning")
            assert not waiting.done()
            await proxy.start()  # the database is up
            async with asyncio.timeout(60):
                assert await waiting == "bound"
        assert tries >= 2
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings  # one warning, not one per try
        assert "binding: the database is not available yet" in warnings[0]
    finally:
        await engine.dispose()
        await proxy.close()


async def test_other_errors_a_refusal_and_the_last_one_after_the_patience_are_raised() -> None:
    async def broken() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await patiently(broken, what="binding", seconds=60)

    tries = 0

    async def refused() -> None:
        nonlocal tries
        tries += 1
        raise DatabaseRefused('cannot use the database: database "x" does not exist')

    with pytest.raises(DatabaseRefused, match="does not exist"):
        await patiently(refused, what="binding", seconds=60)
    assert tries == 1  # the settings are wrong: waiting will not help

    async def down() -> None:
        raise StorageError("database unreachable: connection refused")

    with pytest.raises(StorageError, match="connection refused"):
        await patiently(down, what="binding", seconds=0.5)
