"""Evaluating the pools' circuit breakers from the history (one orchestrator at a time).

Per pool, the attempts that ended since the breaker last changed state (and within the
window) are counted from `warren.history`:

    closed    ─ failures / attempts ≥ failure_rate, attempts ≥ min_calls ─▶ open
    open      ─ open_seconds passed ──────────────────────────────────────▶ half_open
                (or closed, when the latest attempt that ended meanwhile succeeded)
    half_open ─ an attempt succeeded ─▶ closed;  an attempt failed ─▶ open

While open, relays hold the pool's commands in the outbox and timeouts of its steps are
postponed, so waiting steps neither fail nor burn attempts.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert

from orchestrator.engine.vocabulary import FAILURE_EVENTS, SUCCESS_EVENTS
from orchestrator.storage.breakers import BreakerState
from orchestrator.storage.tables import pool_breakers

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection

    from orchestrator.config import Settings

log = logging.getLogger(__name__)

FAILED = list(FAILURE_EVENTS)
SUCCEEDED = list(SUCCESS_EVENTS)

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


async def evaluate(conn: AsyncConnection, settings: Settings, now: datetime) -> None:
    """One round; skipped when another orchestrator holds the evaluation lock."""
    if not await conn.scalar(text("SELECT pg_try_advisory_xact_lock(hashtext('warren.breakers'))")):
        return
    rows = await conn.execute(
        _OUTCOMES,
        {
            "failed": FAILED,
            "succeeded": SUCCEEDED,
            "counted": FAILED + SUCCEEDED,
            "window": settings.breaker_window_seconds,
        },
    )
    outcomes = {r.pool: (r.calls, r.failures, r.successes, r.last_ok) for r in rows}
    current = {
        r.pool: (BreakerState(r.state), r.changed_at)
        for r in await conn.execute(
            text("SELECT pool, state, changed_at FROM warren.pool_breakers")
        )
    }
    for pool in set(outcomes) | set(current):
        calls, failures, successes, last_ok = outcomes.get(pool, (0, 0, 0, False))
        state, changed_at = current.get(pool, (BreakerState.CLOSED, now))
        policy = settings.breaker_for(pool)
        new = state
        if state is BreakerState.CLOSED:
            if calls >= policy.min_calls and failures / calls >= policy.failure_rate:
                new = BreakerState.OPEN
        elif state is BreakerState.OPEN:
            if (now - changed_at).total_seconds() >= policy.open_seconds:
                # Commands already out when it opened may have answered since: if the latest
                # of them succeeded, that was the probe.
                new = BreakerState.CLOSED if last_ok else BreakerState.HALF_OPEN
        elif successes:
            new = BreakerState.CLOSED
        elif failures:
            new = BreakerState.OPEN
        if new is not state:
            log.warning(
                "circuit breaker of pool %s: %s -> %s (%d/%d failed)",
                pool,
                state,
                new,
                failures,
                calls,
            )
        statement = insert(pool_breakers).values(
            pool=pool,
            state=new.value,
            changed_at=now if new is not state else changed_at,
            calls=0 if new is not state else calls,
            failures=0 if new is not state else failures,
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
