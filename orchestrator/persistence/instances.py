"""Instances: the snapshot row, the append-only history, timers and outgoing commands.

`save_transition` is the write half of the core rule: everything a transition produced goes
into the caller's transaction, so it commits (or vanishes) together with the inbox row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
from sqlalchemy import bindparam, delete, insert, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from orchestrator.engine import Dispatch, InstanceState, Phase, TimerKind, Transition
from orchestrator.errors import InstanceNotFound
from orchestrator.messaging.envelope import Command, CommandPayload, encode, new_message_id, utcnow
from orchestrator.storage.outbox import OutboxMessage, PendingRow, enqueue
from orchestrator.storage.tables import history, instances, timers
from orchestrator.storage.wakeup import TIMERS_CHANNEL, notify

if TYPE_CHECKING:
    from uuid import UUID

    from sqlalchemy.ext.asyncio import AsyncConnection

    from orchestrator.messaging.topology import Topology


async def load(
    conn: AsyncConnection, instance_id: UUID, *, for_update: bool = False
) -> InstanceState:
    query = select(instances.c.state).where(instances.c.id == instance_id)
    if for_update:
        query = query.with_for_update()
    state = await conn.scalar(query)
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
    inserted = await conn.execute(
        pg_insert(instances)
        .values(
            id=state.id,
            saga_name=state.saga,
            saga_version=state.version,
            status=state.status.value,
            seq=state.seq,
            state=state,
            created_at=state.created_at,
            updated_at=state.updated_at,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            correlation_key=correlation_key,
            traceparent=traceparent,
        )
        .on_conflict_do_nothing()
        .returning(instances.c.id)
    )
    return inserted.first() is not None


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
    rows = await conn.execute(
        select(instances.c.id, instances.c.state)
        .where(instances.c.id.in_(wanted))
        .order_by(instances.c.id)
        .with_for_update()
    )
    found = {row.id: msgspec.convert(row.state, InstanceState) for row in rows}
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
    await conn.execute(
        update(instances).where(instances.c.id == bindparam("instance_id")),
        [
            {
                "instance_id": state.id,
                "status": state.status.value,
                "seq": state.seq,
                "state": state,
                "updated_at": state.updated_at,
            }
            for state in latest.values()
        ],
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
        {
            "instance_id": item.transition.instance.id,
            "seq": event.seq,
            "type": event.type,
            "step": event.step,
            "phase": event.phase.value if event.phase else None,
            "attempt": event.attempt,
            "pool": event.pool,
            "data": event.data,
            "recorded_at": event.at,
        }
        for item in written
        for event in item.transition.history
    ]
    if not events:
        return []
    await conn.execute(insert(history), events)
    due = [
        {
            "instance_id": item.transition.instance.id,
            "kind": timer.kind.value,
            "step": timer.step,
            "phase": timer.phase.value,
            "attempt": timer.attempt,
            "due_at": timer.due_at,
            "traceparent": item.traceparent,
        }
        for item in written
        for timer in item.transition.timers
    ]
    if due:
        await notify(conn, TIMERS_CHANNEL)  # wake an orchestrator when this commits
        await conn.execute(insert(timers), due)
    commands = [
        _command_message(
            item.transition.instance, dispatch, topology, item.causation_id, item.traceparent
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
    doomed = (
        select(timers.c.id)
        .where(
            timers.c.kind == TimerKind.TIMEOUT.value,
            tuple_(timers.c.instance_id, timers.c.step, timers.c.phase, timers.c.attempt).in_(
                [(i, step, phase.value, attempt) for i, step, phase, attempt in attempts]
            ),
        )
        .with_for_update(skip_locked=True)
    )
    await conn.execute(delete(timers).where(timers.c.id.in_(doomed)))


def _command_message(
    state: InstanceState,
    dispatch: Dispatch,
    topology: Topology,
    causation_id: UUID | None,
    traceparent: str | None,
) -> OutboxMessage:
    command = Command(
        id=new_message_id(),
        saga=state.saga,
        saga_version=state.version,
        instance_id=state.id,
        step=dispatch.step,
        phase=dispatch.phase,
        command=dispatch.command,
        attempt=dispatch.attempt,
        seq=dispatch.seq,
        causation_id=causation_id,
        correlation_id=state.id,
        traceparent=traceparent,
        timestamp=utcnow(),
        payload=CommandPayload(
            input=state.input,
            results=state.results(),
            idempotency_key=f"{state.id}:{dispatch.step}:{dispatch.phase.value}",
        ),
    )
    return OutboxMessage(
        message_id=command.id,
        exchange=topology.commands_exchange,
        routing_key=dispatch.pool,
        body=encode(command),
        headers={"traceparent": traceparent} if traceparent else {},
    )
