"""Applying one event to one instance inside the caller's transaction: the shell's core step.

Every path that changes an instance (a reply, a timer, an operator, a dead letter) goes
through `apply_event`: lock the row, `decide`, write snapshot + history + timers + outbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.engine import Phase, StepReply, decide
from orchestrator.messaging.envelope import utcnow
from orchestrator.persistence import instances

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID

    from sqlalchemy.ext.asyncio import AsyncConnection

    from orchestrator.definitions import Saga
    from orchestrator.engine import Event, InstanceState, Transition
    from orchestrator.messaging.topology import Topology
    from orchestrator.persistence.definitions import DefinitionCache
    from orchestrator.storage.outbox import PendingRow


async def apply_event(
    conn: AsyncConnection,
    definitions: DefinitionCache,
    topology: Topology,
    instance_id: UUID,
    event: Event,
    *,
    causation_id: UUID | None = None,
    traceparent: str | None = None,
    check: Callable[[InstanceState], None] | None = None,
) -> tuple[Transition, list[PendingRow]]:
    """Lock, decide, save. `check` may refuse the event (it raises) before anything changes."""
    state = await instances.load(conn, instance_id, for_update=True)
    if check is not None:
        check(state)
    definition = await definitions.get(conn, state.saga, state.version)
    transition = decide(definition, state, event, utcnow())
    pending = await instances.save_transition(
        conn, transition, topology, causation_id=causation_id, traceparent=traceparent
    )
    if isinstance(event, StepReply) and _has_timeout(definition, event):
        # The attempt replied: its timeout timer has nothing left to do.
        await instances.cancel_timeout(conn, instance_id, event.step, event.phase, event.attempt)
    return transition, pending


def _has_timeout(definition: Saga, reply: StepReply) -> bool:
    step = next((s for s in definition.steps if s.name == reply.step), None)
    if step is None:
        return False
    if reply.phase is Phase.FORWARD:
        return step.timeout_seconds is not None
    return step.compensation is not None and step.compensation.timeout_seconds is not None
