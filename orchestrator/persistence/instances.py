"""Instances: the snapshot row, the append-only history, timers and outgoing commands.

`save_transition` is the write half of the core rule: everything a transition produced goes
into the caller's transaction, so it commits (or vanishes) together with the inbox row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from sqlalchemy import delete, insert, select, update
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


async def save_transition(
    conn: AsyncConnection,
    transition: Transition,
    topology: Topology,
    *,
    causation_id: UUID | None = None,
    traceparent: str | None = None,
) -> list[PendingRow]:
    """Update the snapshot, then append history, timers and commands (see `append`)."""
    if not transition.history:
        return []
    state = transition.instance
    await conn.execute(
        update(instances)
        .where(instances.c.id == state.id)
        .values(status=state.status.value, seq=state.seq, state=state, updated_at=state.updated_at)
    )
    return await append(
        conn, transition, topology, causation_id=causation_id, traceparent=traceparent
    )


async def append(
    conn: AsyncConnection,
    transition: Transition,
    topology: Topology,
    *,
    causation_id: UUID | None = None,
    traceparent: str | None = None,
) -> list[PendingRow]:
    """Write history, timers and commands; return the outbox rows to publish after commit."""
    if not transition.history:
        return []
    state = transition.instance
    await conn.execute(
        insert(history),
        [
            {
                "instance_id": state.id,
                "seq": event.seq,
                "type": event.type,
                "step": event.step,
                "phase": event.phase.value if event.phase else None,
                "attempt": event.attempt,
                "pool": event.pool,
                "data": event.data,
                "recorded_at": event.at,
            }
            for event in transition.history
        ],
    )
    if transition.timers:
        await notify(conn, TIMERS_CHANNEL)  # wake an orchestrator when this commits
        await conn.execute(
            insert(timers),
            [
                {
                    "instance_id": state.id,
                    "kind": timer.kind.value,
                    "step": timer.step,
                    "phase": timer.phase.value,
                    "attempt": timer.attempt,
                    "due_at": timer.due_at,
                    "traceparent": traceparent,
                }
                for timer in transition.timers
            ],
        )
    commands = [
        _command_message(state, dispatch, topology, causation_id, traceparent)
        for dispatch in transition.dispatches
    ]
    return await enqueue(conn, commands)


async def cancel_timeout(
    conn: AsyncConnection, instance_id: UUID, step: str, phase: Phase, attempt: int
) -> None:
    """Drop the timeout of an attempt that replied. A timer being fired right now is locked:
    skip it (no lock-order inversion with the firing transaction); it will find the attempt over."""
    doomed = (
        select(timers.c.id)
        .where(
            timers.c.instance_id == instance_id,
            timers.c.kind == TimerKind.TIMEOUT.value,
            timers.c.step == step,
            timers.c.phase == phase.value,
            timers.c.attempt == attempt,
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
