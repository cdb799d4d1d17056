"""What every relay needs to know of the pools' circuit breakers: which pools' commands to hold.

The state lives in `warren.pool_breakers` (the orchestrators' evaluator writes it). A relay reads
it at most once a second. While a pool's breaker is open, its commands stay in the outbox: the
steps wait, they neither fail nor burn attempts. Half-open, each process lets one probe through.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import select

from orchestrator.observability import metrics
from orchestrator.storage.tables import pool_breakers

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection


class BreakerState(StrEnum):
    CLOSED = "closed"
    """Commands flow."""
    OPEN = "open"
    """Too many recent failures: the pool's commands wait in the outbox."""
    HALF_OPEN = "half_open"
    """Trying again: one probe command goes out; its outcome closes or reopens the breaker."""


_GAUGE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class BreakerBoard:
    """A relay's cached view of the breakers."""

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
        rows = await conn.execute(
            select(pool_breakers.c.pool, pool_breakers.c.state, pool_breakers.c.changed_at)
        )
        self._states = {r.pool: (BreakerState(r.state), r.changed_at) for r in rows}
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
