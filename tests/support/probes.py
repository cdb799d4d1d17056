"""Reading the system's observable state: instances, history, the example ledger, queues."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

import aio_pika
import httpx
from sqlalchemy import text

from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection
    from sqlalchemy.ext.asyncio import AsyncEngine

    from orchestrator.config import Settings

TERMINAL = {"completed", "compensated", "failed"}
CONSUMER_PATIENCE_SECONDS = 60.0
"""A process starting on a loaded 2-core machine: interpreter, imports, connect, declare."""


class QueueProbe:
    """Queues of one vhost: ready messages and consumers."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self._amqp: AbstractConnection | None = None

    async def close(self) -> None:
        if self._amqp is not None:
            await self._amqp.close()
            self._amqp = None

    async def queue(self, name: str) -> tuple[int, int]:
        """(ready messages, consumers) of a queue, by a passive declare on a channel of its own
        (a missing queue closes the channel) over one connection kept for the test: a new
        connection per look costs a loaded broker a handshake every quarter second."""
        if self._amqp is None or self._amqp.is_closed:
            self._amqp = await aio_pika.connect(self.amqp_url, timeout=30)
        channel = await self._amqp.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            result = queue.declaration_result
            return result.message_count or 0, result.consumer_count or 0
        finally:
            if not channel.is_closed:
                await channel.close()

    async def wait_consumers(
        self,
        queue: str,
        count: int = 1,
        timeout: float = CONSUMER_PATIENCE_SECONDS,
        *,
        alive: Callable[[], None] | None = None,
    ) -> None:
        """Until `count` consumers hold `queue`; `alive` fails the wait early when the process
        or task that should consume has died."""
        await wait_for(
            lambda: self.consumers(queue),
            lambda n: n >= count,
            timeout=timeout,
            what=f"{count} consumer(s) on {queue}",
            alive=alive,
        )

    async def wait_no_consumers(
        self, queues: list[str], timeout: float = 10.0, *, what: str | None = None
    ) -> None:
        """Until the broker has dropped every consumer of `queues` (those of a process that is
        gone, or that stopped consuming)."""

        async def consumers() -> int:
            return sum([await self.consumers(queue) for queue in queues])

        await wait_for(
            consumers, lambda n: n == 0, timeout=timeout, what=what or f"no consumers on {queues}"
        )

    async def consumers(self, queue: str) -> int:
        """Consumers of `queue`; 0 while it does not exist yet."""
        try:
            return (await self.queue(queue))[1]
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return 0


@dataclass
class Probe(QueueProbe):
    """The state of one test's database and vhost."""

    settings: Settings
    engine: AsyncEngine

    def __post_init__(self) -> None:
        super().__init__(self.settings.amqp_url)

    async def status(self, instance_id: UUID | str) -> str | None:
        async with self.engine.connect() as conn:
            status: str | None = await conn.scalar(
                text("SELECT status FROM warren.instances WHERE id = :id"), {"id": str(instance_id)}
            )
            return status

    async def statuses(self) -> dict[str, str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(text("SELECT id::text, status FROM warren.instances"))
            return {row.id: row.status for row in rows}

    async def wait_terminal(self, instance_id: UUID | str, timeout: float = 60.0) -> str:
        status = await wait_for(
            lambda: self.status(instance_id),
            lambda s: s in TERMINAL,
            timeout=timeout,
            what=f"instance {instance_id} to end",
        )
        assert status is not None
        return status

    async def wait_all_terminal(self, count: int, timeout: float = 90.0) -> dict[str, str]:
        return await wait_for(
            self.statuses,
            lambda s: len(s) == count and all(v in TERMINAL for v in s.values()),
            timeout=timeout,
            what=f"{count} instances to end",
        )

    async def ledger(self, instance_id: UUID | str | None = None) -> list[tuple[str, str]]:
        """(step, action) rows of the example ledger, in the order they were written."""
        query = "SELECT instance_id::text AS i, step, action FROM orders_example.ledger"
        params: dict[str, Any] = {}
        if instance_id is not None:
            query += " WHERE instance_id = :id"
            params["id"] = str(instance_id)
        async with self.engine.connect() as conn:
            rows = await conn.execute(text(query + " ORDER BY id"), params)
            return [(row.step, row.action) for row in rows]

    async def history(self, instance_id: UUID | str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT seq, type, step, phase, attempt, data FROM warren.history "
                    "WHERE instance_id = :id ORDER BY seq"
                ),
                {"id": str(instance_id)},
            )
            return [dict(row._mapping) for row in rows]

    async def count(self, table: str) -> int:
        async with self.engine.connect() as conn:
            value = await conn.scalar(text(f"SELECT count(*) FROM {table}"))
            return int(value or 0)


async def answers(http: httpx.AsyncClient, path: str) -> bool:
    """Whether GET `path` answers 200; False while the server is not listening yet."""
    try:
        return (await http.get(path)).status_code == 200
    except httpx.TransportError:
        return False


EXAMPLE_POOLS = ("payments", "inventory", "shipping")
