"""The pure core: `decide(definition, instance, event, now) -> Transition`. No I/O here.

The shell (orchestrator.service) loads the instance under a row lock, calls `decide`, and writes
the transition's snapshot, history, commands (outbox) and timers in one transaction.

`decide` only routes: each kind of event goes to the module of its concern (`forward`,
`compensation`, `operations`, `timers`), which changes a `Draft` (see `draft`); retry rules
are in `retries`. A new event kind joins with its module and one row in `_ON_EVENT`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from orchestrator.engine import compensation, forward, operations, ordering, timers, waits
from orchestrator.engine.draft import Draft
from orchestrator.engine.state import (
    SNAPSHOT_FORMAT,
    Cancel,
    Event,
    EventReceived,
    InstanceState,
    ParentLink,
    Resume,
    SignalReceived,
    Start,
    StepReply,
    StepState,
    TimerFired,
    Transition,
    Undo,
    task_keys,
)
from orchestrator.engine.vocabulary import Phase, SagaStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from datetime import datetime
    from uuid import UUID

    from orchestrator.definitions import Saga


def new_instance(
    definition: Saga,
    instance_id: UUID,
    input: Any,
    now: datetime,
    parent: ParentLink | None = None,
) -> InstanceState:
    """A fresh instance, pinned to `definition`'s version; `decide(..., Start(...))` runs it.
    `parent` when it runs as a parent saga's node."""
    return InstanceState(
        id=instance_id,
        saga=definition.name,
        version=definition.version,
        status=SagaStatus.RUNNING,
        input=input,
        steps={key: StepState() for key in task_keys(definition.steps)},
        created_at=now,
        updated_at=now,
        format=SNAPSHOT_FORMAT,
        parent=parent,
    )


def decide(definition: Saga, instance: InstanceState, event: Event, now: datetime) -> Transition:
    draft = Draft(definition, instance, now)
    _ON_EVENT[type(event)](draft, event)
    return draft.transition()


def _on_reply(draft: Draft, reply: StepReply) -> None:
    reason = ordering.out_of_order(draft.instance, reply)
    if reason is not None:
        draft.ignore(reply, reason)
        return
    _ON_REPLY[reply.phase](draft, reply)


_ON_REPLY: Final[Mapping[Phase, Callable[[Draft, StepReply], None]]] = {
    Phase.FORWARD: forward.on_reply,
    Phase.COMPENSATE: compensation.on_reply,
}

# Keyed by the event's class, so each handler receives its own kind (hence `Any` here).
_ON_EVENT: Final[Mapping[type[Event], Callable[[Draft, Any], None]]] = {
    Start: forward.on_start,
    StepReply: _on_reply,
    TimerFired: timers.on_timer,
    Cancel: operations.on_cancel,
    Resume: operations.on_resume,
    Undo: operations.on_undo,
    EventReceived: waits.on_event,
    SignalReceived: waits.on_signal,
}
