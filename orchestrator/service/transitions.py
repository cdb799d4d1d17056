"""Applying events to instances inside the caller's transaction: the shell's core step.

Every change to an instance goes through here and is written by one writer
(`persistence.instances.save_many`: snapshot, history, timers, outbox). A start is the first
transition (`start`: decide, insert); a reply, a timer, an operator or a dead letter is any
later one (`apply_event(s)`: lock the row, decide, update).
It is also where the saga's trace gets its `saga.<event>` span: the timers and commands it
writes carry that span's context, so what they cause later joins the same trace.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from orchestrator.engine import (
    Cancel,
    EventReceived,
    HistoryEventType,
    Phase,
    Resume,
    SignalReceived,
    Start,
    StepReply,
    TimerFired,
    Undo,
    decide,
    new_instance,
)
from orchestrator.engine.replay import Cause
from orchestrator.messaging.envelope import utcnow
from orchestrator.observability import tracing
from orchestrator.persistence import events, instances, timers
from orchestrator.persistence.definitions import DefinitionCache

if TYPE_CHECKING:
    from collections.abc import Callable, Collection
    from contextlib import AbstractContextManager
    from uuid import UUID

    from opentelemetry.context import Context
    from opentelemetry.trace import Link
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from orchestrator.definitions import Saga
    from orchestrator.engine import Event, InstanceState, ParentLink, Subscription, Transition
    from orchestrator.messaging.envelope import Reply
    from orchestrator.messaging.relay import Relay
    from orchestrator.messaging.topology import Topology
    from orchestrator.persistence.outbox import PendingRow


class TransitionService:
    """A service that commits transitions in transactions of its own (a start, an operator's
    action, a dead letter) and then has the relay publish what they wrote."""

    def __init__(
        self,
        engine: AsyncEngine,
        relay: Relay,
        topology: Topology,
        definitions: DefinitionCache | None = None,
    ) -> None:
        self.engine = engine
        self.relay = relay
        self.topology = topology
        self.definitions = definitions or DefinitionCache()


@dataclass(frozen=True, slots=True)
class NewStart:
    """One instance to start (`start_many`)."""

    definition: Saga
    instance_id: UUID
    input: Any
    new: instances.NewInstance
    parent: ParentLink | None = None


async def start_many(
    conn: AsyncConnection,
    topology: Topology,
    starts: list[NewStart],
    *,
    definitions: DefinitionCache | None = None,
    forget: Collection[int] = (),
) -> tuple[list[Transition | None], list[PendingRow]]:
    """Instances' first transitions: decide each start and insert them all, with their
    history and first commands. Each start's transition, or None when its id or idempotency
    key was taken (nothing of it written). `definitions`: the caller's cache, for a first wait
    that takes a kept event; `forget`: the outbox rows its process published, deleted in the
    same statement as its own are written.

    In the caller's span; the commands carry each `new.traceparent` on, as the rows do."""
    now = utcnow()
    written = []
    for each in starts:
        state = new_instance(each.definition, each.instance_id, each.input, now, each.parent)
        transition = decide(each.definition, state, Start(input=each.input), now)
        cause = Cause(event=Start(input=each.input), parent=each.parent)
        written.append(
            instances.Written(
                transition, traceparent=each.new.traceparent, new=each.new, cause=cause
            )
        )
    saved = await instances.save_many(conn, written, topology, forget=forget)
    made = [
        None if item.transition.instance.id in saved.taken else item.transition for item in written
    ]
    pending = saved.pending
    waiting = [t for t in made if t is not None and t.subscriptions]
    if waiting:  # a first wait may take an event that came first
        pending += await take_kept_events(conn, definitions or DefinitionCache(), topology, waiting)
    return made, pending


async def start(
    conn: AsyncConnection,
    topology: Topology,
    definition: Saga,
    instance_id: UUID,
    input: Any,
    new: instances.NewInstance,
    parent: ParentLink | None = None,
    definitions: DefinitionCache | None = None,
) -> tuple[Transition, list[PendingRow]]:
    """One start (`start_many`); `AlreadyStarted` (nothing written) when its id or
    idempotency key is taken."""
    made, pending = await start_many(
        conn,
        topology,
        [NewStart(definition, instance_id, input, new, parent)],
        definitions=definitions,
    )
    if made[0] is None:
        raise instances.AlreadyStarted(
            f"saga instance {instance_id} (or its idempotency key) exists"
        )
    return made[0], pending


def reply_event(reply: Reply) -> StepReply:
    """The engine's event for a worker's reply."""
    return StepReply(
        step=reply.step,
        phase=reply.phase,
        attempt=reply.attempt,
        ok=reply.payload.ok,
        result=reply.payload.result,
        failure=reply.payload.failure,
        seq=reply.seq,
    )


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
    with tracing.span(f"saga.{_verb(event)}", parent=trace_parent, links=trace_links):
        state = (await instances.load_many(conn, [instance_id]))[instance_id]
        if check is not None:
            check(state)
        written, timeout = await _decide(conn, definitions, state, event, causation_id, traceparent)
        pending = (await instances.save_many(conn, [written], topology)).pending
        await timers.cancel_timeouts(conn, timeout)
        pending += await take_kept_events(conn, definitions, topology, [written.transition])
        return written.transition, pending


@dataclass(frozen=True, slots=True)
class Incoming:
    """One event for `apply_events`, with what the caller wants around its handling (the
    message's span, its log fields)."""

    instance_id: UUID
    event: Event
    causation_id: UUID | None = None
    traceparent: str | None = None
    around: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext


async def apply_events(
    conn: AsyncConnection,
    definitions: DefinitionCache,
    topology: Topology,
    incoming: list[Incoming],
    *,
    locked: dict[UUID, InstanceState] | None = None,
    forget: Collection[int] = (),
) -> tuple[list[Transition], list[PendingRow]]:
    """`apply_event` for many events at once, a few statements for all: lock every instance in
    one statement (unless the caller did: `locked`), decide each event in turn (several may
    concern one instance), then write all snapshots, history and commands together (with the
    published outbox rows to `forget`)."""
    states = (
        dict(locked)
        if locked is not None
        else await instances.load_many(conn, [item.instance_id for item in incoming])
    )
    written: list[instances.Written] = []
    timeouts: list[tuple[UUID, str, Phase, int]] = []
    for item in incoming:
        with item.around(), tracing.span(f"saga.{_verb(item.event)}"):
            done, timeout = await _decide(
                conn,
                definitions,
                states[item.instance_id],
                item.event,
                item.causation_id,
                item.traceparent,
            )
        states[item.instance_id] = done.transition.instance
        written.append(done)
        timeouts += timeout
    pending = (await instances.save_many(conn, written, topology, forget=forget)).pending
    await timers.cancel_timeouts(conn, timeouts)
    transitions = [item.transition for item in written]
    pending += await take_kept_events(conn, definitions, topology, transitions)
    return transitions, pending


async def take_kept_events(
    conn: AsyncConnection,
    definitions: DefinitionCache,
    topology: Topology,
    transitions: list[Transition],
) -> list[PendingRow]:
    """The event waits these transitions began take an event that arrived before them (kept
    within the retention), if there is one: applied now, in the same transaction."""
    began: dict[tuple[UUID, str], Subscription] = {}
    for transition in transitions:
        instance_id = transition.instance.id
        for sub in transition.subscriptions:
            began[(instance_id, sub.key)] = sub
        for key in transition.waits_ended:  # a later transition of the batch ended it
            began.pop((instance_id, key), None)
    incoming: list[Incoming] = []
    now = utcnow()
    for (instance_id, key), sub in began.items():
        kept = await events.kept_event(conn, instance_id, sub)
        if kept is not None and await events.deliver(conn, kept.seq, instance_id, key, now):
            await events.count(conn, kept.seq, started=0, reached=1, problems=[])
            incoming.append(Incoming(instance_id, EventReceived(wait=key, received=kept.body)))
    if not incoming:
        return []
    # Applying them may begin further waits, which look in turn (each takes one event).
    _, pending = await apply_events(conn, definitions, topology, incoming)
    return pending


async def _decide(
    conn: AsyncConnection,
    definitions: DefinitionCache,
    state: InstanceState,
    event: Event,
    causation_id: UUID | None,
    traceparent: str | None,
) -> tuple[instances.Written, list[tuple[UUID, str, Phase, int]]]:
    """Decide in the current span; what to write, and the timeout the reply makes moot."""
    definition = await definitions.get(conn, state.saga, state.version)
    transition = decide(definition, state, event, utcnow())
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(_span_attributes(transition.instance, event))
    written = instances.Written(
        transition,
        causation_id,
        tracing.current_traceparent(fallback=traceparent),
        cause=Cause(event=event),
    )
    if isinstance(event, StepReply) and _has_timeout(definition, event) and _heard(transition):
        # The attempt replied: its timeout timer has nothing left to do.
        return written, [(state.id, event.step, event.phase, event.attempt)]
    return written, []


def _heard(transition: Transition) -> bool:
    """Did the engine take the reply? One it ignored (a duplicate, or one that does not
    answer the attempt's dispatch) leaves the attempt's timeout to run."""
    return not (transition.history and transition.history[0].type is HistoryEventType.REPLY_IGNORED)


def _verb(event: Event) -> str:
    if isinstance(event, StepReply):
        return "reply"
    if isinstance(event, TimerFired):
        return "timer"
    if isinstance(event, Cancel):
        return "cancel"
    if isinstance(event, Resume):
        return "retry"
    if isinstance(event, Undo):
        return "undo"
    if isinstance(event, EventReceived):
        return "event"
    if isinstance(event, SignalReceived):
        return "signal"
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
    return definition.timeout_of(reply.step, forward=reply.phase is Phase.FORWARD) is not None
