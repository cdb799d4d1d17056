"""Instances: the snapshot row, the append-only history, timers and outgoing commands.

`save_transition` is the write half of the core rule: everything a transition produced goes
into the caller's transaction, so it commits (or vanishes) together with the inbox row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

import msgspec
from sqlalchemy import select

from orchestrator.engine import InstanceState, Phase, Transition
from orchestrator.errors import InstanceNotFound
from orchestrator.messaging.outgoing import command_for
from orchestrator.storage.database import driver
from orchestrator.storage.outbox import PendingRow, enqueue
from orchestrator.storage.tables import instances
from orchestrator.storage.wakeup import TIMERS_CHANNEL, notify

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from orchestrator.messaging.topology import Topology


async def load(conn: AsyncConnection, instance_id: UUID) -> InstanceState:
    """Read an instance (to lock it and change it: `load_many`)."""
    state = await conn.scalar(select(instances.c.state).where(instances.c.id == instance_id))
    if state is None:
        raise InstanceNotFound(f"no saga instance {instance_id}")
    return msgspec.convert(state, InstanceState)


async def traceparent(conn: AsyncConnection, instance_id: UUID) -> str | None:
    """The trace context the instance was started in (None when it was not traced)."""
    value: str | None = await conn.scalar(
        select(instances.c.traceparent).where(instances.c.id == instance_id)
    )
    return value


async def insert_new(
    conn: AsyncConnection,
    state: InstanceState,
    *,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    correlation_key: str | None = None,
    traceparent: str | None = None,
) -> bool:
    """Insert a started instance's snapshot; False when its id or (saga, idempotency key) is
    taken. A concurrent start with the same key waits here until the first one commits."""
    inserted = await (await driver(conn)).fetchval(
        _INSERT_NEW,
        state.id,
        state.saga,
        state.version,
        state.status.value,
        state.seq,
        _json.encode(state).decode(),
        state.created_at,
        state.updated_at,
        idempotency_key,
        request_hash,
        correlation_key,
        traceparent,
    )
    return inserted is not None


# The statements on every message's path, sent on the driver connection (storage.database.driver):
# fixed texts, prepared once per connection, one round trip for any number of rows.
_INSERT_NEW = """
INSERT INTO warren.instances (id, saga_name, saga_version, status, seq, state, created_at,
                              updated_at, idempotency_key, request_hash, correlation_key,
                              traceparent)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12)
ON CONFLICT DO NOTHING RETURNING id"""

_LOCK_MANY = """
SELECT id, state::text AS state FROM warren.instances
WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"""

_UPDATE_MANY = """
UPDATE warren.instances AS i
SET status = u.status, seq = u.seq, state = u.state::jsonb, updated_at = u.updated_at
FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::timestamptz[])
    AS u(id, status, seq, state, updated_at)
WHERE i.id = u.id"""

_INSERT_HISTORY = """
INSERT INTO warren.history (instance_id, seq, type, step, phase, attempt, pool, data, recorded_at)
SELECT i, s, t, st, ph, a, p, d::jsonb, r
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[],
            $8::text[], $9::timestamptz[]) AS x(i, s, t, st, ph, a, p, d, r)"""

_INSERT_TIMERS = """
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

_json = msgspec.json.Encoder()
_state = msgspec.json.Decoder(InstanceState)


@dataclass(frozen=True, slots=True)
class Written:
    """A transition to write, with the message that caused it and the trace context its
    timers and commands carry on."""

    transition: Transition
    causation_id: UUID | None = None
    traceparent: str | None = None


async def load_many(conn: AsyncConnection, instance_ids: list[UUID]) -> dict[UUID, InstanceState]:
    """Lock and read several instances in one statement (in id order: no lock-order cycles
    between two batches); a missing one is `InstanceNotFound`."""
    wanted = sorted(set(instance_ids))
    rows = await (await driver(conn)).fetch(_LOCK_MANY, wanted)
    found = {UUID(bytes=row["id"].bytes): _state.decode(row["state"]) for row in rows}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise InstanceNotFound(f"no saga instance {missing[0]}")
    return found


async def save_transition(
    conn: AsyncConnection,
    transition: Transition,
    topology: Topology,
    *,
    causation_id: UUID | None = None,
    traceparent: str | None = None,
) -> list[PendingRow]:
    """Update the snapshot, then append history, timers and commands (see `save_many`)."""
    return await save_many(conn, [Written(transition, causation_id, traceparent)], topology)


async def save_many(
    conn: AsyncConnection, written: list[Written], topology: Topology
) -> list[PendingRow]:
    """Write what several transitions produced, a few statements for all of them: each
    instance's latest snapshot, then history, timers and commands (see `append_many`)."""
    latest: dict[UUID, InstanceState] = {}
    for item in written:
        if item.transition.history:
            latest[item.transition.instance.id] = item.transition.instance
    if not latest:
        return []
    states = list(latest.values())
    await (await driver(conn)).execute(
        _UPDATE_MANY,
        [state.id for state in states],
        [state.status.value for state in states],
        [state.seq for state in states],
        [_json.encode(state).decode() for state in states],
        [state.updated_at for state in states],
    )
    return await append_many(conn, written, topology)


async def append(
    conn: AsyncConnection,
    transition: Transition,
    topology: Topology,
    *,
    causation_id: UUID | None = None,
    traceparent: str | None = None,
) -> list[PendingRow]:
    """Write history, timers and commands; return the outbox rows to publish after commit."""
    return await append_many(conn, [Written(transition, causation_id, traceparent)], topology)


async def append_many(
    conn: AsyncConnection, written: list[Written], topology: Topology
) -> list[PendingRow]:
    """History, timers and commands of several transitions: one statement each."""
    events = [
        (item.transition.instance.id, event)
        for item in written
        for event in item.transition.history
    ]
    if not events:
        return []
    raw = await driver(conn)
    await raw.execute(
        _INSERT_HISTORY,
        [instance_id for instance_id, _ in events],
        [e.seq for _, e in events],
        [e.type for _, e in events],
        [e.step for _, e in events],
        [e.phase.value if e.phase else None for _, e in events],
        [e.attempt for _, e in events],
        [e.pool for _, e in events],
        [_json.encode(e.data).decode() for _, e in events],
        [e.at for _, e in events],
    )
    due = [
        (item.transition.instance.id, item.traceparent, timer)
        for item in written
        for timer in item.transition.timers
    ]
    if due:
        await notify(conn, TIMERS_CHANNEL)  # wake an orchestrator when this commits
        await raw.execute(
            _INSERT_TIMERS,
            [instance_id for instance_id, _, _ in due],
            [t.kind.value for _, _, t in due],
            [t.step for _, _, t in due],
            [t.phase.value for _, _, t in due],
            [t.attempt for _, _, t in due],
            [t.due_at for _, _, t in due],
            [traceparent for _, traceparent, _ in due],
        )
    commands = [
        command_for(
            item.transition.instance,
            dispatch,
            topology,
            causation_id=item.causation_id,
            traceparent=item.traceparent,
        )
        for item in written
        for dispatch in item.transition.dispatches
    ]
    return await enqueue(conn, commands)


async def cancel_timeout(
    conn: AsyncConnection, instance_id: UUID, step: str, phase: Phase, attempt: int
) -> None:
    """Drop the timeout of an attempt that replied (see `cancel_timeouts`)."""
    await cancel_timeouts(conn, [(instance_id, step, phase, attempt)])


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
