"""The pool_breakers table: each pool's circuit breaker, written by the orchestrators'
evaluator (`service/breakers.py`), read by every relay and by the pools page."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

import msgspec
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert

from orchestrator.storage.tables import pool_breakers

if TYPE_CHECKING:
    from collections.abc import Collection

    from sqlalchemy.ext.asyncio import AsyncConnection

# One evaluator at a time: the others skip their round.
_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtext('warren.breakers'))")

# Per pool, the attempts that ended since its breaker last changed state, within the window.
_OUTCOMES = text(
    """
    SELECT h.pool,
           count(*) AS calls,
           count(*) FILTER (WHERE h.type = ANY(:failed)) AS failures,
           count(*) FILTER (WHERE h.type = ANY(:succeeded)) AS successes,
           (array_agg(h.type ORDER BY h.recorded_at DESC))[1] = ANY(:succeeded) AS last_ok
    FROM warren.history h
    LEFT JOIN warren.pool_breakers b ON b.pool = h.pool
    WHERE h.pool IS NOT NULL
      AND h.recorded_at > now() - make_interval(secs => :window)
      AND h.recorded_at > coalesce(b.changed_at, '-infinity')
      AND h.type = ANY(:counted)
    GROUP BY h.pool
    """
)

_STATES = text("SELECT pool, state, changed_at FROM warren.pool_breakers")


class BreakerState(StrEnum):
    CLOSED = "closed"
    """Commands flow."""
    OPEN = "open"
    """Too many recent failures: the pool's commands wait in the outbox."""
    HALF_OPEN = "half_open"
    """Trying again: one probe command goes out; its outcome closes or reopens the breaker."""


class BreakerRow(msgspec.Struct, frozen=True, kw_only=True):
    state: str
    changed_at: datetime
    calls: int
    failures: int


class Outcomes(msgspec.Struct, frozen=True):
    """A pool's attempts that ended since its breaker last changed state."""

    calls: int
    failures: int
    successes: int
    last_ok: bool
    """Whether the latest of them succeeded."""


async def states(conn: AsyncConnection) -> dict[str, tuple[BreakerState, datetime]]:
    """Each stored breaker's state and when it took it; a pool without a row is closed."""
    return {r.pool: (BreakerState(r.state), r.changed_at) for r in await conn.execute(_STATES)}


async def rows(conn: AsyncConnection) -> dict[str, BreakerRow]:
    """Each pool's stored breaker; a pool without a row has never left `closed`."""
    c = pool_breakers.c
    found = await conn.execute(select(c.pool, c.state, c.changed_at, c.calls, c.failures))
    return {
        r.pool: BreakerRow(
            state=r.state, changed_at=r.changed_at, calls=r.calls, failures=r.failures
        )
        for r in found
    }


async def lock_evaluation(conn: AsyncConnection) -> bool:
    """Take the evaluation lock for this transaction; False when another one holds it."""
    return bool(await conn.scalar(_TRY_LOCK))


async def outcomes(
    conn: AsyncConnection,
    *,
    failed: Collection[str],
    succeeded: Collection[str],
    window_seconds: float,
) -> dict[str, Outcomes]:
    """Per pool, the attempts (history events of the `failed` and `succeeded` types) that
    ended within the window and since its breaker last changed state."""
    found = await conn.execute(
        _OUTCOMES,
        {
            "failed": list(failed),
            "succeeded": list(succeeded),
            "counted": [*failed, *succeeded],
            "window": window_seconds,
        },
    )
    return {r.pool: Outcomes(r.calls, r.failures, r.successes, r.last_ok) for r in found}


async def save(
    conn: AsyncConnection,
    pool: str,
    state: BreakerState,
    *,
    changed_at: datetime,
    calls: int,
    failures: int,
) -> None:
    """Insert or replace a pool's breaker."""
    statement = insert(pool_breakers).values(
        pool=pool, state=state.value, changed_at=changed_at, calls=calls, failures=failures
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[pool_breakers.c.pool],
            set_={
                "state": statement.excluded.state,
                "changed_at": statement.excluded.changed_at,
                "calls": statement.excluded.calls,
                "failures": statement.excluded.failures,
            },
        )
    )
