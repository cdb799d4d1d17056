"""The transactional outbox: messages written with their cause, published after commit.

Two paths publish a row: the process that committed it, right after the commit (for latency;
the confirmed rows are then deleted in batches, off the message's path), and a sweeper that
claims rows older than a grace period with `FOR UPDATE SKIP LOCKED` (so a crash never loses
one). Both may publish the same row; the consumer's inbox drops the copy.
Rows are never read with an `id > last` cursor, which would skip rows committed out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec
from sqlalchemy import and_, delete, func, select, text

from orchestrator.errors import WarrenError
from orchestrator.messaging.faults import crash_point
from orchestrator.observability import metrics, tracing
from orchestrator.storage.database import driver, transaction
from orchestrator.storage.tables import outbox

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from orchestrator.messaging.broker import Broker
    from orchestrator.storage.breakers import BreakerBoard

log = logging.getLogger(__name__)

_headers = msgspec.json.Encoder()


class OutboxMessage(msgspec.Struct, frozen=True, kw_only=True):
    message_id: UUID
    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any] = {}


class PendingRow(msgspec.Struct, frozen=True):
    id: int
    message: OutboxMessage


_ENQUEUE = """
INSERT INTO warren.outbox (message_id, exchange, routing_key, body, headers)
SELECT m, e, r, b, h::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[]) AS x(m, e, r, b, h)
RETURNING id, message_id"""

_DELETE = "DELETE FROM warren.outbox WHERE id = ANY($1::bigint[])"


async def enqueue(conn: AsyncConnection, messages: list[OutboxMessage]) -> list[PendingRow]:
    """Write `messages` in the caller's transaction (one statement); publish the result after
    commit."""
    if not messages:
        return []
    rows = await (await driver(conn)).fetch(
        _ENQUEUE,
        [m.message_id for m in messages],
        [m.exchange for m in messages],
        [m.routing_key for m in messages],
        [m.body for m in messages],
        [_headers.encode(m.headers).decode() for m in messages],
    )
    ids = {UUID(bytes=row["message_id"].bytes): row["id"] for row in rows}
    return [PendingRow(ids[m.message_id], m) for m in messages]


class Relay:
    """Publishes committed outbox rows and deletes them once the broker confirmed them."""

    def __init__(
        self,
        engine: AsyncEngine,
        broker: Broker,
        *,
        grace_seconds: float = 2.0,
        batch_size: int = 200,
        breakers: BreakerBoard | None = None,
        commands_exchange: str | None = None,
    ) -> None:
        self.engine = engine
        self.broker = broker
        self.grace_seconds = grace_seconds
        self.batch_size = batch_size
        self.breakers = breakers
        """With a board, commands to a pool whose breaker is open stay in the outbox."""
        self.commands_exchange = commands_exchange
        self._confirmed: list[int] = []
        self._deleter: asyncio.Task[None] | None = None

    def _admit(self, rows: list[PendingRow]) -> list[PendingRow]:
        """The rows that may go out now, given the pools' breakers."""
        if self.breakers is None:
            return rows
        held = self.breakers.held()
        admitted = []
        for row in rows:
            pool = row.message.routing_key
            if row.message.exchange != self.commands_exchange:
                admitted.append(row)
            elif pool in held:
                continue
            elif not self.breakers.is_half_open(pool) or self.breakers.take_probe(pool):
                admitted.append(row)
        return admitted

    async def publish_committed(self, rows: list[PendingRow]) -> None:
        """Right after a commit: publish the rows, then delete the confirmed ones in the
        background, many at once (one transaction for all that were confirmed meanwhile).

        Nothing is claimed first: the sweeper only takes rows older than the grace period, so
        it publishes a row a second time only when this path is slower than that (or died);
        the consumer's inbox drops such a copy. A row that is not confirmed stays for the
        sweeper."""
        if not rows:
            return
        try:
            await self._refresh_breakers()
            published = await self._publish(self._admit(rows))
        except WarrenError as exc:
            log.warning("outbox publish deferred to the sweeper: %s", exc)
            return
        metrics.outbox_published.labels("immediate").inc(len(published))
        self._confirmed.extend(published)
        if self._deleter is None or self._deleter.done():
            self._deleter = asyncio.create_task(self._delete_confirmed())

    async def _refresh_breakers(self) -> None:
        if self.breakers is not None and self.breakers.stale:
            async with transaction(self.engine) as conn:
                await self.breakers.refresh(conn)

    async def _delete_confirmed(self) -> None:
        """Delete confirmed rows until none are left; rows confirmed while a delete runs go
        in the next one (group commit)."""
        while self._confirmed:
            ids, self._confirmed = self._confirmed, []
            try:
                async with transaction(self.engine) as conn:
                    await (await driver(conn)).execute(_DELETE, ids)
            except WarrenError as exc:
                # Published already: the sweeper will publish them again, the inboxes drop them.
                log.warning("%d published outbox rows not deleted: %s", len(ids), exc)

    async def flush(self) -> None:
        """Wait until the rows published so far are deleted (at shutdown, in tests)."""
        while self._deleter is not None and not self._deleter.done():
            await self._deleter

    async def sweep_once(self) -> int:
        """Claim, publish and delete the rows left behind; return how many were published."""
        async with transaction(self.engine) as conn:
            query = select(outbox).where(
                outbox.c.created_at < text("now() - make_interval(secs => :grace)")
            )
            if self.breakers is not None:
                await self.breakers.refresh(conn)
                if (
                    held := self.breakers.held()
                ):  # skip them in SQL: they must not crowd out the rest
                    query = query.where(
                        ~and_(
                            outbox.c.exchange == self.commands_exchange,
                            outbox.c.routing_key.in_(held),
                        )
                    )
            claimed = await conn.execute(
                query.order_by(outbox.c.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True),
                {"grace": self.grace_seconds},
            )
            rows = [
                PendingRow(
                    r.id,
                    OutboxMessage(
                        message_id=r.message_id,
                        exchange=r.exchange,
                        routing_key=r.routing_key,
                        body=r.body,
                        headers=r.headers,
                    ),
                )
                for r in claimed
            ]
            published = await self._publish(self._admit(rows))
            if published:
                await conn.execute(delete(outbox).where(outbox.c.id.in_(published)))
        metrics.outbox_published.labels("sweeper").inc(len(published))
        return len(published)

    async def measure_backlog(self) -> None:
        """Update the outbox gauges: rows waiting, age of the oldest."""
        async with transaction(self.engine) as conn:
            row = (
                await conn.execute(
                    select(
                        func.count(),
                        func.coalesce(
                            func.extract("epoch", func.now() - func.min(outbox.c.created_at)), 0
                        ),
                    )
                )
            ).one()
        metrics.outbox_backlog.set(row[0])
        metrics.outbox_oldest_age.set(max(float(row[1]), 0.0))

    async def run_sweeper(self, stopping: asyncio.Event, *, interval_seconds: float = 1.0) -> None:
        while not stopping.is_set():
            try:
                while await self.sweep_once() >= self.batch_size:
                    pass
                await self.measure_backlog()
            except WarrenError as exc:
                log.warning("outbox sweep failed, will try again: %s", exc)
            except Exception:  # a bug must not stop the sweeping for good
                log.exception("outbox sweep failed unexpectedly, will try again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval_seconds)

    async def _publish(self, rows: list[PendingRow]) -> list[int]:
        """Publish concurrently (one round of confirms); return the ids the broker confirmed."""
        if not rows:
            return []
        results = await asyncio.gather(
            *(self._publish_one(row.message) for row in rows), return_exceptions=True
        )
        published: list[int] = []
        for row, outcome in zip(rows, results, strict=True):
            if isinstance(outcome, WarrenError):
                log.warning("outbox row %s not published: %s", row.id, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                published.append(row.id)
        crash_point("relay.after_publish")
        return published

    async def _publish_one(self, message: OutboxMessage) -> None:
        """One publish, as a span of the trace whose context the row stored; the message
        carries the publish span's context on."""
        with tracing.messaging_span(
            "send",
            headers=message.headers,
            exchange=message.exchange,
            routing_key=message.routing_key,
            message_id=message.message_id,
            body_size=len(message.body),
        ):
            await self.broker.publish(
                message.exchange,
                message.routing_key,
                message.body,
                message_id=message.message_id,
                headers={**message.headers, **tracing.carrier()},
            )
