"""The timers table: durable timers (delays, retries, timeouts, deadlines). A transition writes
them (`insert_many`); an orchestrator claims a due one, fires it under the instance lock and
deletes it in the same transaction, so a timer fires once."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

import msgspec
from sqlalchemy import delete as delete_from
from sqlalchemy import func, select, update

from orchestrator.engine import Phase, TimerKind
from orchestrator.storage.database import driver
from orchestrator.storage.tables import timers
from orchestrator.storage.wakeup import TIMERS_CHANNEL, notify

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from orchestrator.engine import ScheduleTimer

# On every message's path: sent on the driver connection (storage.database.driver).
_INSERT_MANY = """
INSERT INTO warren.timers (instance_id, kind, step, phase, attempt, due_at, traceparent)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[],
                     $6::timestamptz[], $7::text[])"""

# A timer being fired right now is locked: skip it (see `cancel_timeouts`).
_CANCEL_TIMEOUTS = """
DELETE FROM warren.timers WHERE id IN (
    SELECT t.id FROM warren.timers AS t
    JOIN unnest($1::uuid[], $2::text[], $3::text[], $4::int[])
        AS a(instance_id, step, phase, attempt)
      ON (t.instance_id, t.step, t.phase, t.attempt)
       = (a.instance_id, a.step, a.phase, a.attempt)
    WHERE t.kind = 'timeout'
    FOR UPDATE OF t SKIP LOCKED)"""


class DueTimer(msgspec.Struct, frozen=True, kw_only=True):
    """A claimed timer row."""

    id: int
    instance_id: UUID
    kind: TimerKind
    step: str
    phase: Phase
    attempt: int
    due_at: datetime
    traceparent: str | None


async def insert_many(
    conn: AsyncConnection, due: list[tuple[UUID, str | None, ScheduleTimer]]
) -> None:
    """Write timers, each with its instance and the trace context it carries on, and wake an
    orchestrator when this transaction commits."""
    if not due:
        return
    await notify(conn, TIMERS_CHANNEL)
    await (await driver(conn)).execute(
        _INSERT_MANY,
        [instance_id for instance_id, _, _ in due],
        [t.kind.value for _, _, t in due],
        [t.step for _, _, t in due],
        [t.phase.value for _, _, t in due],
        [t.attempt for _, _, t in due],
        [t.due_at for _, _, t in due],
        [traceparent for _, traceparent, _ in due],
    )


async def cancel_timeouts(
    conn: AsyncConnection, attempts: list[tuple[UUID, str, Phase, int]]
) -> None:
    """Drop the timeouts of attempts that replied, in one statement. A timer being fired right
    now is locked: skip it (no lock-order inversion with the firing transaction); it will find
    the attempt over."""
    if not attempts:
        return
    await (await driver(conn)).execute(
        _CANCEL_TIMEOUTS,
        [instance_id for instance_id, _, _, _ in attempts],
        [step for _, step, _, _ in attempts],
        [phase.value for _, _, phase, _ in attempts],
        [attempt for _, _, _, attempt in attempts],
    )


async def next_due_at(conn: AsyncConnection) -> datetime | None:
    """When the earliest timer is due; None when there is none."""
    due: datetime | None = await conn.scalar(select(func.min(timers.c.due_at)))
    return due


async def claim_due(conn: AsyncConnection, now: datetime) -> DueTimer | None:
    """Lock the earliest timer due at `now` that no other transaction holds (`SKIP LOCKED`)."""
    row = (
        await conn.execute(
            select(timers)
            .where(timers.c.due_at <= now)
            .order_by(timers.c.due_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
    ).first()
    if row is None:
        return None
    return DueTimer(
        id=row.id,
        instance_id=row.instance_id,
        kind=TimerKind(row.kind),
        step=row.step,
        phase=Phase(row.phase),
        attempt=row.attempt,
        due_at=row.due_at,
        traceparent=row.traceparent,
    )


async def postpone(conn: AsyncConnection, timer_id: int, due_at: datetime) -> None:
    await conn.execute(update(timers).where(timers.c.id == timer_id).values(due_at=due_at))


async def delete(conn: AsyncConnection, timer_id: int) -> None:
    """Forget a timer that fired."""
    await conn.execute(delete_from(timers).where(timers.c.id == timer_id))
