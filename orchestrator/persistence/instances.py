"""Instances: the snapshot row, the append-only history, timers and outgoing commands.

`save_many` is the write half of the core rule, and the only writer of instances: everything
the transitions produced (a start's included) goes into the caller's transaction, so it commits
(or vanishes) together with the inbox row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

import msgspec
from sqlalchemy import select

from orchestrator.engine import InstanceState, Phase, Transition
from orchestrator.errors import Conflict, InstanceNotFound, WarrenError
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
FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::timestamptz[], $6::int[])
    AS u(id, status, seq, state, updated_at, since)
WHERE i.id = u.id AND i.seq = u.since"""

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


@dataclass(frozen=True, slots=True, kw_only=True)
class NewInstance:
    """What a start stores beside the first snapshot: the keys that make it idempotent (the
    unique index on them settles a race), and the trace it started in."""

    idempotency_key: str | None = None
    request_hash: str | None = None
    correlation_key: str | None = None
    traceparent: str | None = None


class AlreadyStarted(WarrenError):
    """A start's instance id, or its (saga, idempotency key), is taken: nothing was written.
    The starter turns it into the earlier instance, or an `IdempotencyConflict`."""


@dataclass(frozen=True, slots=True)
class Written:
    """A transition to write, with the message that caused it and the trace context its
    timers and commands carry on."""

    transition: Transition
    causation_id: UUID | None = None
    traceparent: str | None = None
    new: NewInstance | None = None
    """Set on an instance's first transition (its start): the snapshot is inserted."""


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


async def save_many(
    conn: AsyncConnection, written: list[Written], topology: Topology
) -> list[PendingRow]:
    """Write what several transitions produced, a few statements for all of them: each
    instance's latest snapshot, then history, timers and commands (see `append_many`).

    A start's snapshot is inserted (`AlreadyStarted` when its id or key is taken: then
    nothing is written). Any other is updated only if the stored one is still the snapshot its
    first transition here was decided from (whose seq comes right before that transition's
    history): the row lock of `load_many` guarantees it, and a `Conflict` says a path wrote
    without it."""
    latest: dict[UUID, InstanceState] = {}
    since: dict[UUID, int] = {}
    for item in written:
        transition = item.transition
        if item.new is not None:
            await _insert(conn, transition.instance, item.new)
        elif transition.history:
            instance_id = transition.instance.id
            since.setdefault(instance_id, transition.history[0].seq - 1)
            latest[instance_id] = transition.instance
    if latest:
        await _update(conn, list(latest.values()), since)
    return await append_many(conn, written, topology)


async def _insert(conn: AsyncConnection, state: InstanceState, new: NewInstance) -> None:
    """Insert a started instance's snapshot. A concurrent start with the same key waits here
    until the first one commits, then finds it taken."""
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
        new.idempotency_key,
        new.request_hash,
        new.correlation_key,
        new.traceparent,
    )
    if inserted is None:
        raise AlreadyStarted(f"saga instance {state.id} (or its idempotency key) exists")


async def _update(
    conn: AsyncConnection, states: list[InstanceState], since: dict[UUID, int]
) -> None:
    status = await (await driver(conn)).execute(
        _UPDATE_MANY,
        [state.id for state in states],
        [state.status.value for state in states],
        [state.seq for state in states],
        [_json.encode(state).decode() for state in states],
        [state.updated_at for state in states],
        [since[state.id] for state in states],
    )
    if status != f"UPDATE {len(states)}":
        raise Conflict(
            "a saga instance changed while a transition of it was being written; the message "
            "that caused the transition is handled again",
            retryable=True,
        )


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
