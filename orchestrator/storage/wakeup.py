"""LISTEN/NOTIFY as a wake-up hint. A transaction that writes a timer notifies a channel at
commit; orchestrators listening wake up at once instead of at their next poll. It is only a
hint: when the listening connection is down, polling still finds every timer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import asyncpg

from orchestrator.storage.database import driver

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger(__name__)

TIMERS_CHANNEL = "warren_timers"


async def notify(conn: AsyncConnection, channel: str) -> None:
    """Queue a notification; Postgres delivers it when (and only if) the transaction commits."""
    await (await driver(conn)).execute("SELECT pg_notify($1, '')", channel)


class Listener:
    """Keeps one connection LISTENing on `channel` and sets `event` on each notification."""

    def __init__(self, database_url: str, channel: str) -> None:
        self.dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.channel = channel
        self.event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_listening())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait(self, seconds: float) -> None:
        """Return on the next notification or after `seconds`, whichever is first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout=max(seconds, 0.0))
        self.event.clear()

    async def _keep_listening(self) -> None:
        while True:
            try:
                conn = await asyncpg.connect(self.dsn)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("cannot listen for wake-ups (polling meanwhile): %s", exc)
                await asyncio.sleep(5)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(partial(_set, lost))
            try:
                await conn.add_listener(self.channel, self._on_notify)
                self.event.set()  # anything that happened while we were not listening
                await lost.wait()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("wake-up listener lost (polling meanwhile): %s", exc)
            finally:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)
            await asyncio.sleep(1)

    def _on_notify(self, *_: Any) -> None:
        self.event.set()


def _set(event: asyncio.Event, *_: Any) -> None:
    event.set()
