"""The pools page's reads of the definitions and breaker tables (the rest of it, activity and
steps in flight, is in `queries`)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import msgspec
from sqlalchemy import select

from orchestrator.storage.tables import definitions, pool_breakers

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


class BreakerRow(msgspec.Struct, frozen=True, kw_only=True):
    state: str
    changed_at: datetime
    calls: int
    failures: int


async def definition_keys(conn: AsyncConnection) -> list[tuple[str, int]]:
    """(name, version) of every stored definition."""
    rows = await conn.execute(select(definitions.c.name, definitions.c.version))
    return [(r.name, r.version) for r in rows]


async def breakers(conn: AsyncConnection) -> dict[str, BreakerRow]:
    """Each pool's stored breaker; a pool without a row has never left `closed`."""
    c = pool_breakers.c
    rows = await conn.execute(select(c.pool, c.state, c.changed_at, c.calls, c.failures))
    return {
        r.pool: BreakerRow(
            state=r.state, changed_at=r.changed_at, calls=r.calls, failures=r.failures
        )
        for r in rows
    }
