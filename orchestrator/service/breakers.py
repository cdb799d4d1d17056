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

from orchestrator.definitions import CHILD_POOL
from orchestrator.engine.vocabulary import FAILURE_EVENTS, SUCCESS_EVENTS
from orchestrator.persistence import pool_breakers
from orchestrator.persistence.pool_breakers import BreakerState, Outcomes

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection

    from orchestrator.config import Settings

log = logging.getLogger(__name__)

NOTHING_ENDED = Outcomes(calls=0, failures=0, successes=0, last_ok=False)


async def evaluate(conn: AsyncConnection, settings: Settings, now: datetime) -> None:
    """One round; skipped when another orchestrator holds the evaluation lock."""
    if not await pool_breakers.lock_evaluation(conn):
        return
    outcomes = await pool_breakers.outcomes(
        conn,
        failed=FAILURE_EVENTS,
        succeeded=SUCCESS_EVENTS,
        window_seconds=settings.breaker_window_seconds,
    )
    current = await pool_breakers.states(conn)
    # The orchestrators' own pool (child sagas) has no workers to protect.
    for pool in (set(outcomes) | set(current)) - {CHILD_POOL}:
        ended = outcomes.get(pool, NOTHING_ENDED)
        calls, failures, successes = ended.calls, ended.failures, ended.successes
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
                new = BreakerState.CLOSED if ended.last_ok else BreakerState.HALF_OPEN
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
        changed = new is not state
        await pool_breakers.save(
            conn,
            pool,
            new,
            changed_at=now if changed else changed_at,
            calls=0 if changed else calls,
            failures=0 if changed else failures,
        )
