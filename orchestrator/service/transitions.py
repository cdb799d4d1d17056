"""Applying one event to one instance inside the caller's transaction: the shell's core step.

Every path that changes an instance (a reply, a timer, an operator, a dead letter) goes
through `apply_event`: lock the row, `decide`, write snapshot + history + timers + outbox.
It is also where the saga's trace gets its `saga.<event>` span: the timers and commands it
writes carry that span's context, so what they cause later joins the same trace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.engine import Cancel, Phase, Resume, StepReply, TimerFired, decide
from orchestrator.messaging.envelope import utcnow
from orchestrator.observability import tracing
from orchestrator.persistence import instances

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID

    from opentelemetry.context import Context
    from opentelemetry.trace import Link
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
    trace_parent: Context | None = None,
    trace_links: list[Link] | None = None,
) -> tuple[Transition, list[PendingRow]]:
    """Lock, decide, save. `check` may refuse the event (it raises) before anything changes.

    The span is a child of the current one unless `trace_parent` says otherwise (a timer's
    stored context, an instance's start); `traceparent` is what to store when not tracing."""
    with tracing.span(f"saga.{_verb(event)}", parent=trace_parent, links=trace_links) as current:
        state = await instances.load(conn, instance_id, for_update=True)
        if check is not None:
            check(state)
        definition = await definitions.get(conn, state.saga, state.version)
        transition = decide(definition, state, event, utcnow())
        if current.is_recording():
            current.set_attributes(_span_attributes(transition.instance, event))
        pending = await instances.save_transition(
            conn,
            transition,
            topology,
            causation_id=causation_id,
            traceparent=tracing.current_traceparent(fallback=traceparent),
        )
        if isinstance(event, StepReply) and _has_timeout(definition, event):
            # The attempt replied: its timeout timer has nothing left to do.
            await instances.cancel_timeout(
                conn, instance_id, event.step, event.phase, event.attempt
            )
        return transition, pending


def _verb(event: Event) -> str:
    if isinstance(event, StepReply):
        return "reply"
    if isinstance(event, TimerFired):
        return "timer"
    if isinstance(event, Cancel):
        return "cancel"
    if isinstance(event, Resume):
        return "retry"
    return "start"


def _span_attributes(state: InstanceState, event: Event) -> dict[str, Any]:
    attributes = tracing.saga_attributes(
        saga=state.saga, version=state.version, instance_id=state.id
    )
    if isinstance(event, StepReply | TimerFired):
        attributes |= tracing.saga_attributes(
            step=event.step, phase=event.phase.value, attempt=event.attempt
        )
    if isinstance(event, StepReply):
        attributes["warren.reply.ok"] = event.ok
    if isinstance(event, TimerFired):
        attributes["warren.timer.kind"] = event.kind.value
    attributes["warren.saga.status"] = state.status.value
    return attributes


def _has_timeout(definition: Saga, reply: StepReply) -> bool:
    step = next((s for s in definition.steps if s.name == reply.step), None)
    if step is None:
        return False
    if reply.phase is Phase.FORWARD:
        return step.timeout_seconds is not None
    return step.compensation is not None and step.compensation.timeout_seconds is not None
