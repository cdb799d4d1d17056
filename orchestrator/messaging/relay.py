"""The relay: publishes the outbox's rows, and holds the commands of pools whose breaker is open.

Two paths publish a row: the process that committed it, right after the commit (for latency;
the confirmed rows are then deleted by that process's next transaction, in the statement that
writes its own rows, or after a short pause by a delete of their own), and a sweeper that
claims rows older than a grace period with `FOR UPDATE SKIP LOCKED` (so a crash never loses
one). Both may publish the same row; the consumer's inbox drops the copy.
Rows are never read with an `id > last` cursor, which would skip rows committed out of order.
Their SQL is in `orchestrator.persistence.outbox`, the breakers' in `persistence.pool_breakers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from orchestrator.errors import WarrenError
from orchestrator.messaging.envelope import CONTENT_TYPE
from orchestrator.messaging.faults import crash_point
from orchestrator.observability import metrics, tracing
from orchestrator.persistence import outbox, pool_breakers
from orchestrator.persistence.pool_breakers import BreakerState
from orchestrator.storage.database import transaction

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from orchestrator.messaging.broker import Broker
    from orchestrator.persistence.outbox import OutboxMessage, PendingRow

log = logging.getLogger(__name__)


_GAUGE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class BreakerBoard:
    """A relay's cached view of the pools' circuit breakers: which pools' commands to hold.

    The state lives in `warren.pool_breakers` (the orchestrators' evaluator writes it); a relay
    reads it at most once a second. While a pool's breaker is open, its commands stay in the
    outbox: the steps wait, they neither fail nor burn attempts. Half-open, each process lets
    one probe through."""

    def __init__(self, *, refresh_seconds: float = 1.0) -> None:
        self.refresh_seconds = refresh_seconds
        self._states: dict[str, tuple[BreakerState, datetime]] = {}
        self._read_at = float("-inf")
        self._probed: dict[str, datetime] = {}

    @property
    def stale(self) -> bool:
        return time.monotonic() - self._read_at >= self.refresh_seconds

    async def refresh(self, conn: AsyncConnection) -> None:
        if not self.stale:
            return
        self._states = await pool_breakers.states(conn)
        self._read_at = time.monotonic()
        for pool, (state, _) in self._states.items():
            metrics.breaker_state.labels(pool).set(_GAUGE_VALUE[state])

    def held(self) -> frozenset[str]:
        """Pools whose commands must wait now (open, or half-open with the probe spent)."""
        return frozenset(
            pool
            for pool, (state, changed_at) in self._states.items()
            if state is BreakerState.OPEN
            or (state is BreakerState.HALF_OPEN and self._probed.get(pool) == changed_at)
        )

    def take_probe(self, pool: str) -> bool:
        """True once per half-open period (per process) for a half-open pool."""
        state, changed_at = self._states.get(pool, (BreakerState.CLOSED, None))
        if state is not BreakerState.HALF_OPEN or self._probed.get(pool) == changed_at:
            return False
        assert changed_at is not None
        self._probed[pool] = changed_at
        return True

    def is_half_open(self, pool: str) -> bool:
        return self._states.get(pool, (BreakerState.CLOSED, None))[0] is BreakerState.HALF_OPEN


class Relay:
    """Publishes committed outbox rows and deletes them once the broker confirmed them."""

    def __init__(
        self,
        engine: AsyncEngine,
        broker: Broker,
        *,
        grace_seconds: float = 2.0,
        batch_size: int = 200,
        forget_after_seconds: float | None = None,
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
        self.forget_after_seconds = (
            min(0.25, grace_seconds / 4) if forget_after_seconds is None else forget_after_seconds
        )
        """How long confirmed rows wait for a transaction of this process to delete them, before
        a delete of their own: well within the grace, or the sweeper would publish them again."""
        self._confirmed: list[int] = []
        self._deleter: asyncio.Task[None] | None = None
        self._flushing = asyncio.Event()

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
        """Right after a commit: publish the rows; the confirmed ones are deleted later, by
        this process's next transaction (`forgetting`) or, when none comes soon, by a delete
        of their own (one transaction for all that were confirmed meanwhile).

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
        self._schedule_delete()

    @contextlib.contextmanager
    def forgetting(self) -> Iterator[list[int]]:
        """The rows confirmed so far, for the caller's transaction to delete in the statement
        that writes its own outbox rows (no commit of their own); given back if it fails."""
        ids, self._confirmed = self._confirmed, []
        try:
            yield ids
        except BaseException:
            self._confirmed.extend(ids)
            self._schedule_delete()
            raise

    def _schedule_delete(self) -> None:
        if self._confirmed and (self._deleter is None or self._deleter.done()):
            self._deleter = asyncio.create_task(self._delete_confirmed())

    async def _refresh_breakers(self) -> None:
        if self.breakers is not None and self.breakers.stale:
            async with transaction(self.engine) as conn:
                await self.breakers.refresh(conn)

    async def _delete_confirmed(self) -> None:
        """After a pause (a transaction of this process usually takes the rows meanwhile),
        delete what is left until nothing is (group commit)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flushing.wait(), timeout=self.forget_after_seconds)
        while self._confirmed:
            ids, self._confirmed = self._confirmed, []
            try:
                async with transaction(self.engine) as conn:
                    await outbox.delete_published(conn, ids)
            except WarrenError as exc:
                # Published already: the sweeper will publish them again, the inboxes drop them.
                log.warning("%d published outbox rows not deleted: %s", len(ids), exc)

    async def flush(self) -> None:
        """Delete the rows published so far now (at shutdown, in tests)."""
        self._flushing.set()
        try:
            while self._deleter is not None and not self._deleter.done():
                await self._deleter
        finally:
            self._flushing.clear()

    async def sweep_once(self) -> int:
        """Claim, publish and delete the rows left behind; return how many were published."""
        async with transaction(self.engine) as conn:
            held: frozenset[str] = frozenset()
            if self.breakers is not None:
                await self.breakers.refresh(conn)
                held = self.breakers.held()
            rows = await outbox.claim_left_behind(
                conn,
                grace_seconds=self.grace_seconds,
                limit=self.batch_size,
                held=held,
                commands_exchange=self.commands_exchange,
            )
            published = await self._publish(self._admit(rows))
            if published:
                await outbox.delete_claimed(conn, published)
        metrics.outbox_published.labels("sweeper").inc(len(published))
        return len(published)

    async def measure_backlog(self) -> None:
        """Update the outbox gauges: rows waiting, age of the oldest."""
        async with transaction(self.engine) as conn:
            waiting, oldest_age = await outbox.backlog(conn)
        metrics.outbox_backlog.set(waiting)
        metrics.outbox_oldest_age.set(max(oldest_age, 0.0))

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
        with tracing.messaging_span("send", message):
            headers = {**message.headers, **tracing.carrier()}
            # A CloudEvent's content type is its data's (an AMQP property, not a header); its
            # trace context is a `ce-` attribute too, the one it was made in when it has one.
            content_type = headers.pop("content-type", CONTENT_TYPE)
            if "ce-id" in headers and "traceparent" in headers:
                headers.setdefault("ce-traceparent", headers["traceparent"])
            await self.broker.publish(
                message.exchange,
                message.routing_key,
                message.body,
                message_id=message.message_id,
                headers=headers,
                content_type=content_type,
            )
