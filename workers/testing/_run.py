"""One harness run: the real engine and the worker runtime's handler path, over an in-memory
wire, on a virtual clock.

The loop mirrors the processes: the orchestrator side applies an event with `decide`, turns the
transition's dispatches into commands with the shell's builder (`messaging.outgoing`), and
keeps its timers; the worker side decodes a command, runs the handler as `workers.runtime` does
and builds the reply with the runtime's builder; the orchestrator decodes the reply and applies
it. When nothing is in flight, the clock jumps to the next timer.

A `ChildSaga` node's orders (pool ``warren.children``) are served here as the orchestrators'
`service.children` serves them: the start creates the child's instance, linked to its parent,
and runs it on the same wire and clock; the undo and the cancel are applied to it; the child's
end goes back to the parent's node as a reply (`outgoing.reply_to_parent`).

Events in and out are served as `service.events` serves them (`_events`): an event the script
sends, or one a saga of the run publishes (through the wire, as the relay would), is brought to
its current shape, checked against the schemas the sagas declare for its type, recorded, and
delivered to the waits under way that take it; a wait that begins takes a kept one. A signal
is applied to its instance. When nothing is left to do but a wait that nothing will end, the
run stops with a `HarnessError` saying what the wait wants and the script line that sends it.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections import deque
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator import engine
from orchestrator.definitions import CHILD_POOL, ChildSaga, Map, Step, WaitFor
from orchestrator.definitions.model import CANCEL_CHILD_COMMAND, children_of, node_name
from orchestrator.engine.state import child_instance_id
from orchestrator.errors import InputInvalid, WarrenError
from orchestrator.messaging.cloudevents import CloudEvent, event_message, from_amqp, validate
from orchestrator.messaging.envelope import Command, Reply, ReplyPayload, decode, new_message_id
from orchestrator.messaging.event_schemas import check_event_data
from orchestrator.messaging.failure import Failure
from orchestrator.messaging.outgoing import (
    EVENT_SOURCE_PREFIX,
    command_for,
    reply_to,
    reply_to_parent,
)
from orchestrator.messaging.topology import Topology
from orchestrator.messaging.versions import UPCASTERS
from orchestrator.service.children import cannot_start, parent_link
from orchestrator.service.events import event_body
from orchestrator.service.starter import InputValidator
from orchestrator.service.transitions import reply_event
from orchestrator.storage.database import create_engine
from workers.app import Handler, HandlerSpec, NoSession
from workers.runtime import handler_chain, run_handler, step_context
from workers.testing import (
    Cancel,
    EmittedEvent,
    Fail,
    FailForGood,
    HarnessError,
    SagaResult,
    SendEvent,
    SendSignal,
    TimeOut,
)
from workers.testing._events import Mailbox, how_to_end, waits_under_way

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    from sqlalchemy.ext.asyncio import AsyncEngine

    from orchestrator.definitions import Node, Saga, Task
    from orchestrator.engine import (
        Emitted,
        Event,
        HistoryEvent,
        InstanceState,
        ScheduleTimer,
    )
    from orchestrator.persistence.outbox import OutboxMessage
    from workers.app import StepContext, Worker
    from workers.testing import Outcome

# Far more messages and timers than any sane saga needs: past it, the saga loops.
_MAX_EVENTS = 100_000


@dataclass(frozen=True, slots=True)
class _Delivery:
    """One message on the in-memory wire, as the broker would carry it."""

    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Wire:
    """Stands in for RabbitMQ: what is published is delivered in order, each message once."""

    topology: Topology
    queue: deque[_Delivery] = field(default_factory=deque)

    def publish(self, message: OutboxMessage) -> None:
        """What the relay would publish of an outbox message: its address and body."""
        self.queue.append(
            _Delivery(message.exchange, message.routing_key, message.body, message.headers)
        )


@dataclass(slots=True)
class _Instance:
    """One saga instance of a run: the saga under test, or a child one of its nodes started."""

    definition: Saga
    state: InstanceState
    prefix: str
    """What a script puts before its step keys: "" for the saga under test, the path of child
    nodes that started it otherwise (``pay/``)."""
    started_at: datetime
    history: list[HistoryEvent] = field(default_factory=list)
    children: dict[str, UUID] = field(default_factory=dict)
    """The children its nodes started, by node key."""


class Run:
    """One instance of one saga, and the child sagas it starts, from its start until nothing is
    left to do."""

    def __init__(
        self,
        definition: Saga,
        worker: Worker | None,
        script: Sequence[Outcome],
        *,
        sagas: Sequence[Saga] = (),
        database_url: str | None,
        now: datetime,
    ) -> None:
        self.definition = definition
        self.worker = worker
        self.sagas = sagas
        self.inputs = InputValidator()
        self.database_url = database_url
        self.database: AsyncEngine | None = None
        self.now = now
        self.wire = _Wire(Topology(namespace="harness"))
        self.instances: dict[UUID, _Instance] = {}
        self.root: _Instance
        # (due, order, instance, timer): timers due at once fire in the order they were set
        self.timers: list[tuple[datetime, int, UUID, ScheduleTimer]] = []
        self.timer_order = itertools.count()
        self.lines, self.timed = _compile(definition, script, sagas)
        self.mailbox = Mailbox()
        self.signals_seen: set[tuple[UUID, str]] = set()
        self.emitted: list[EmittedEvent] = []
        self.outcomes: dict[tuple[str, engine.Phase], _Scripted] = {}
        # The app's middlewares run around its handlers here as in a worker.
        self.chain = handler_chain(worker) if worker is not None else None

    async def to_the_end(self, input: Any, instance_id: UUID | None) -> SagaResult:
        state = engine.new_instance(
            self.definition, instance_id or new_message_id(), input, self.now
        )
        self.root = self.instances[state.id] = _Instance(self.definition, state, "", self.now)
        at_start = [line for line in self.timed if _at_start(line)]
        self.timed = [line for line in self.timed if not _at_start(line)]
        try:
            for line in at_start:  # events first: kept until a wait takes them
                if isinstance(line, SendEvent):
                    await self.send_event(line)
            await self.apply(self.root, engine.Start(input=input))
            for line in at_start:  # a signal needs its instance: sent once it exists
                if isinstance(line, SendSignal):
                    await self.send_signal(self.root, line)
            for _ in range(_MAX_EVENTS):
                if not await self.step():
                    self.refuse_stuck_waits()
                    return self.result(self.root, self.now)
        finally:
            if self.database is not None:
                await self.database.dispose()
        raise HarnessError(
            f"saga {self.definition.name!r} was still going after {_MAX_EVENTS} messages and "
            "timers: does the script fail a step forever with a retry policy that never ends "
            "(or does a saga start itself as a child, endlessly)?"
        )

    async def step(self) -> bool:
        """Deliver the next message, or fire the next timer when none is in flight; False when
        nothing is left to do."""
        if self.wire.queue:
            delivery = self.wire.queue.popleft()
            if delivery.exchange == self.wire.topology.events_exchange:
                headers = delivery.headers
                await self.receive(from_amqp(delivery.body, headers, headers.get("content-type")))
            elif delivery.exchange == self.wire.topology.commands_exchange:
                command = decode(delivery.body)
                assert isinstance(command, Command)
                if delivery.routing_key == CHILD_POOL:
                    await self.child_order(command)
                else:
                    await self.work(command, delivery.routing_key)
            else:
                reply = decode(delivery.body)
                assert isinstance(reply, Reply)
                instance = self.instances[reply.instance_id]
                await self.apply(instance, reply_event(reply), causation_id=reply.id)
            return True
        while self.timers:
            due, _, instance_id, timer = heapq.heappop(self.timers)
            instance = self.instances[instance_id]
            if instance.state.status.terminal:
                continue  # a finished saga's timers would change nothing
            self.now = max(self.now, due)
            event = engine.TimerFired(
                kind=timer.kind, step=timer.step, phase=timer.phase, attempt=timer.attempt
            )
            await self.apply(instance, event)
            return True
        return False

    # ---- the orchestrator's side --------------------------------------------------------------

    async def apply(
        self, instance: _Instance, event: Event, *, causation_id: UUID | None = None
    ) -> None:
        transition = engine.decide(instance.definition, instance.state, event, self.now)
        instance.state = transition.instance
        instance.history += transition.history
        if isinstance(event, engine.StepReply):
            # As the shell does: the attempt replied, its timeout has nothing left to do.
            self.timers = [
                item
                for item in self.timers
                if not (
                    item[2] == instance.state.id
                    and item[3].kind is engine.TimerKind.TIMEOUT
                    and (item[3].step, item[3].phase, item[3].attempt)
                    == (event.step, event.phase, event.attempt)
                )
            ]
            heapq.heapify(self.timers)
        for timer in transition.timers:
            entry = (timer.due_at, next(self.timer_order), instance.state.id, timer)
            heapq.heappush(self.timers, entry)
        for dispatch in transition.dispatches:
            self.wire.publish(
                command_for(instance.state, dispatch, self.wire.topology, causation_id=causation_id)
            )
        if transition.parent_reply is not None:
            self.wire.publish(
                reply_to_parent(
                    transition.parent_reply, self.wire.topology, causation_id=causation_id
                )
            )
        for emitted in transition.events:
            self.publish_event(instance, emitted)
        # As the shell keeps its waits table: the waits that began, less those that ended.
        self.mailbox.open(instance.state.id, transition.subscriptions)
        self.mailbox.end(instance.state.id, transition.waits_ended)
        for sub in transition.subscriptions:  # a wait that began takes an event that came first
            if self.mailbox.under_way(instance.state.id, sub.key):
                kept = self.mailbox.take_kept(instance.state.id, sub)
                if kept is not None:
                    await self.apply(instance, engine.EventReceived(wait=sub.key, received=kept))
        for line in self.lines_due(instance, transition.history):
            if isinstance(line, Cancel):
                await self.apply(self.root, engine.Cancel(reason=line.reason))
            elif isinstance(line, SendEvent):
                await self.send_event(line)
            else:
                await self.send_signal(instance, line)

    def lines_due(self, instance: _Instance, history: Sequence[HistoryEvent]) -> list[_Timed]:
        """The script's cancels, events and signals whose moment is in `history`: a step
        dispatched or succeeded, a wait that began."""
        due: list[_Timed] = []
        for event in history:
            if event.step is None:
                continue
            key = instance.prefix + event.step
            for line in list(self.timed):
                moment = _moment_of(line)
                if moment is not None and moment[0] == event.type and names(moment[1], key):
                    self.timed.remove(line)
                    due.append(line)
        return due

    # ---- events and signals -------------------------------------------------------------------

    async def send_event(self, line: SendEvent) -> None:
        """An event the script sends, as `POST /v1/events` receives it."""
        assert line.id is not None  # _compile numbers the events without one
        event = CloudEvent(
            id=line.id,
            source=line.source,
            type=line.type,
            time=line.time or self.now,
            subject=line.subject,
            dataversion=line.dataversion,
            data=line.data,
        )
        await self.receive(event)

    async def receive(self, event: CloudEvent) -> None:
        """Bring `event` to its current shape, check it, record it, and deliver it to the waits
        under way that take it (each instance's oldest), as `service.events` does."""
        try:
            data, version = UPCASTERS.upcast(event.type, event.dataversion, event.data)
            event = msgspec.structs.replace(event, data=data, dataversion=version)
            check_event_data(self.event_schemas(event.type), event)
        except WarrenError as refused:
            raise HarnessError(
                f"event {event.type!r} (id {event.id!r}) would be refused: {refused}"
            ) from refused
        body = event_body(event)
        seq = self.mailbox.record(body)
        if seq is None:
            return  # a copy of an event already received: dropped, as the inbox drops it
        for instance_id, key in self.mailbox.reach(seq):
            instance = self.instances[instance_id]
            await self.apply(instance, engine.EventReceived(wait=key, received=body))

    def event_schemas(self, event_type: str) -> list[dict[str, Any]]:
        """The schemas the run's sagas declare for `event_type` (the servers check those of
        every registered saga)."""
        schemas: list[dict[str, Any]] = []
        for saga in (self.definition, *self.sagas):
            schema = (saga.event_schemas or {}).get(event_type)
            if schema is not None and schema not in schemas:
                schemas.append(schema)
        return schemas

    async def send_signal(self, instance: _Instance, line: SendSignal) -> None:
        assert line.id is not None  # _compile numbers the signals without one
        if (instance.state.id, line.id) in self.signals_seen:
            return  # the same signal again: dropped, as the API drops it
        self.signals_seen.add((instance.state.id, line.id))
        signal = engine.Signal(name=line.name, id=line.id, data=line.data)
        await self.apply(instance, engine.SignalReceived(signal=signal))

    def publish_event(self, instance: _Instance, emitted: Emitted) -> None:
        """A domain event a saga published: noted for the result, and put on the wire as the
        relay would publish it (the run's waits may take it)."""
        state = instance.state
        self.emitted.append(
            EmittedEvent(
                type=emitted.type,
                data=emitted.data,
                instance_id=state.id,
                saga=state.saga,
                child=instance.prefix.removesuffix("/") or None,
                id=str(emitted.id),
                dataversion=emitted.dataversion,
                at=self.now,
            )
        )
        event = CloudEvent(
            id=str(emitted.id),
            source=f"{EVENT_SOURCE_PREFIX}{state.saga}",
            type=emitted.type,
            time=self.now,
            subject=str(state.id),
            dataversion=emitted.dataversion,
            correlationid=str(state.id),
            data=emitted.data,
        )
        self.wire.publish(event_message(event, self.wire.topology))

    def refuse_stuck_waits(self) -> None:
        """Nothing is left to do: a wait still under way will never end (it has no timeout,
        or it would have fired). Say what it waits for and how to send it."""
        stuck = [
            how_to_end(
                instance.prefix + key,
                wait,
                self.mailbox.waits.get(instance.state.id, {}).get(key, (0, None))[1],
            )
            for instance in self.instances.values()
            if not instance.state.status.terminal
            for key, wait in waits_under_way(instance.definition, instance.state)
        ]
        if not stuck:
            return
        unsent = [_shown(line) for line in self.timed if not isinstance(line, Cancel)]
        never = f" (never sent, their moment did not come: {'; '.join(unsent)})" if unsent else ""
        raise HarnessError(
            f"saga {self.definition.name!r} can go no further: {'; '.join(stuck)}, or give the "
            f"wait a timeout_seconds{never}"
        )

    async def child_order(self, order: Command) -> None:
        """An order of a parent's `ChildSaga` node, served as `service.children` serves it:
        start the child, undo it, or cancel it. No reply to the order itself: the child
        answers when it ends (or at once, when it cannot start)."""
        parent = self.instances[order.instance_id]
        child = self.instances.get(child_instance_id(order.instance_id, order.step))
        if order.command == CANCEL_CHILD_COMMAND:
            if child is not None:  # a cancel that overtook the start: the parent undoes it later
                reason = f"its parent {order.instance_id} stopped going forward"
                await self.apply(child, engine.Cancel(reason=reason), causation_id=order.id)
            return
        scripted = self.scripted(parent.prefix + order.step, order.phase)
        if scripted.pending():  # the script answers for the child (FailForGood on the node)
            payload = scripted.take()
            if payload is not None:
                self.wire.publish(reply_to(order, payload, self.wire.topology))
            return
        if order.phase is engine.Phase.COMPENSATE:
            if child is not None:
                undo = engine.Undo(attempt=order.attempt, seq=order.seq)
                await self.apply(child, undo, causation_id=order.id)
            return
        if child is None:  # else started by an earlier copy of this order
            await self.start_child(parent, order)

    def input_invalid(self, definition: Saga, input: Any) -> Failure | None:
        """Why a child's input does not satisfy its saga's input schema, as a start would check
        (each run its own validator: two tests may give different sagas the same version)."""
        try:
            self.inputs.check(definition, input)
        except InputInvalid as exc:
            return cannot_start(exc)
        return None

    async def start_child(self, parent: _Instance, order: Command) -> None:
        node = parent.definition.find(order.step)
        assert isinstance(node, ChildSaga)
        definition = child_definition(node, self.sagas)
        input = order.payload.input
        failure = (
            _not_given(node, self.sagas)
            if definition is None
            else self.input_invalid(definition, input)
        )
        if definition is None or failure is not None:
            # The child cannot start: the parent's node fails now, and the parent compensates.
            answer = ReplyPayload(ok=False, failure=failure)
            self.wire.publish(reply_to(order, answer, self.wire.topology))
            return
        link = parent_link(order)
        child_id = child_instance_id(order.instance_id, order.step)
        state = engine.new_instance(definition, child_id, input, self.now, parent=link)
        child = self.instances[child_id] = _Instance(
            definition, state, f"{parent.prefix}{order.step}/", self.now
        )
        parent.children[order.step] = child_id
        await self.apply(child, engine.Start(input=input), causation_id=order.id)

    # ---- the worker's side --------------------------------------------------------------------

    async def work(self, command: Command, pool: str) -> None:
        key = self.instances[command.instance_id].prefix + command.step
        scripted = self.scripted(key, command.phase)
        if scripted.pending():
            payload = scripted.take()
            if payload is None:
                return  # lost: the attempt's timeout will fire
        else:
            payload = await self.handle(command, pool)
        self.wire.publish(reply_to(command, payload, self.wire.topology))

    def scripted(self, key: str, phase: engine.Phase) -> _Scripted:
        """The scripted replies of one step phase: its own copy of every line that names it
        (by its key, or by its name for every map item and child saga), in script order."""
        found = self.outcomes.get((key, phase))
        if found is None:
            found = self.outcomes[key, phase] = _Scripted(
                deque(
                    (reply, times)
                    for selector, line_phase, reply, times in self.lines
                    if line_phase is phase and names(selector, key)
                )
            )
        return found

    async def handle(self, command: Command, pool: str) -> ReplyPayload:
        """Run the handler as the worker runtime does; no worker: an empty success."""
        spec = self.worker.lookup(pool, command.command) if self.worker is not None else None
        if spec is None or self.chain is None:  # no worker: the harness checked the handlers
            return ReplyPayload(ok=True, result={})
        missing: list[NoSession] = []
        guarded = replace(spec, fn=_noting_missing_session(spec, missing))
        if not spec.transactional or self.database_url is None:
            payload = await run_handler(
                guarded, step_context(command, None, pool=pool), pool, self.chain
            )
        else:
            if self.database is None:
                self.database = create_engine(self.database_url, pool_size=1)
            async with AsyncSession(self.database) as session:
                # One transaction per handler call: its writes commit with its success.
                payload = await run_handler(
                    guarded, step_context(command, session, pool=pool), pool, self.chain
                )
                if payload.ok:
                    await session.commit()
                else:
                    await session.rollback()
        if missing:
            what = f"the handler for {command.command!r} on pool {pool!r} uses ctx.session"
            raise HarnessError(
                f"{what}, but it is registered with transactional=False: it gets no session "
                "(register it transactional, the default, to write in the step's transaction)"
                if not spec.transactional
                else f"{what} and the harness has no database: pass database_url= to "
                "SagaHarness (a database where the handler's tables exist), or register the "
                "handler with transactional=False if it needs no session"
            ) from missing[0]
        return payload

    # ---- the result -------------------------------------------------------------------------

    def result(self, instance: _Instance, end: datetime) -> SagaResult:
        state = instance.state
        history = instance.history
        path = list(dict.fromkeys(e.step for e in history if e.type == "step_dispatched"))
        cases = {e.step: e.data["case"] for e in history if e.type == "case_chosen" and e.step}
        return SagaResult(
            instance_id=state.id,
            status=state.status,
            path=[step for step in path if step is not None],
            compensated=[
                e.step for e in history if e.type == "compensation_succeeded" and e.step is not None
            ],
            cases=cases,
            results=state.results(),
            attempts={name: state.steps[name].attempt for name in path if name is not None},
            failure=state.failure,
            emitted=[
                event
                for event in self.emitted
                if f"{event.child or ''}/".startswith(instance.prefix)
            ],
            received={
                key: node.received
                for key, node in state.nodes.items()
                if node.received is not None and isinstance(instance.definition.find(key), WaitFor)
            },
            history=[e.type for e in history],
            events=list(history),
            instance=state,
            elapsed_seconds=(end - instance.started_at) / timedelta(seconds=1),
            children={
                key: self.result(child, child.state.updated_at)
                for key, child_id in instance.children.items()
                for child in [self.instances[child_id]]
            },
        )


def _noting_missing_session(spec: HandlerSpec, missing: list[NoSession]) -> Handler:
    """`spec`'s handler, noting a `NoSession` it raises (the runtime turns it into a retryable
    failure; the harness stops the run to say what the test lacks)."""

    async def handler(ctx: StepContext) -> Any:
        try:
            return await spec.fn(ctx)
        except NoSession as exc:
            missing.append(exc)
            raise

    return handler


@dataclass(slots=True)
class _Scripted:
    """A step phase's scripted replies, in attempt order: each (reply, attempts it answers;
    None: every one from then on). A reply of None is no reply at all."""

    lines: deque[tuple[ReplyPayload | None, int | None]] = field(default_factory=deque)

    def pending(self) -> bool:
        return bool(self.lines)

    def take(self) -> ReplyPayload | None:
        reply, times = self.lines[0]
        if times is not None:
            if times == 1:
                self.lines.popleft()
            else:
                self.lines[0] = (reply, times - 1)
        return reply


_Timed = Cancel | SendEvent | SendSignal
"""A script line that happens at a moment of the run rather than answering a command."""

_HAPPENED = {"dispatched": "step_dispatched", "succeeded": "step_succeeded"}


def _moment_of(line: _Timed) -> tuple[str, str] | None:
    """The history event (type, step or wait it names) at which `line` happens; None for an
    event or signal sent at the start."""
    if isinstance(line, Cancel):
        return _HAPPENED[line.at], line.step
    if line.when_waiting is not None:
        return "wait_started", line.when_waiting
    if line.step is not None:
        return _HAPPENED[line.at], line.step
    return None


def _shown(line: _Timed) -> str:
    """A script line as it would be written: the fields it sets, not their defaults."""
    given = [
        f"{each.name}={getattr(line, each.name)!r}"
        for each in fields(line)
        if getattr(line, each.name) != each.default and each.name != "id"
    ]
    return f"{type(line).__name__}({', '.join(given)})"


def _at_start(line: _Timed) -> bool:
    return _moment_of(line) is None


_Line = tuple[str, engine.Phase, ReplyPayload | None, int | None]
"""A compiled script line: the step it names (a name or a key), the phase, the reply (None: no
reply at all) and the attempts it answers (None: every one)."""


def _compile(
    definition: Saga, script: Sequence[Outcome], sagas: Sequence[Saga] = ()
) -> tuple[list[_Line], list[_Timed]]:
    """The scripted replies, in script order, and the lines that happen at a moment (cancels,
    events and signals; each event and signal with its id); a line that names what neither
    the saga nor the child sagas it may start have is refused here."""
    lines: list[_Line] = []
    timed: list[_Timed] = []
    numbers = {SendEvent: itertools.count(1), SendSignal: itertools.count(1)}
    for line in script:
        if isinstance(line, SendEvent | SendSignal):
            timed.append(_sending(definition, line, sagas, next(numbers[type(line)])))
            continue
        tasks = tasks_for(definition, line.step, sagas)
        if isinstance(line, Cancel):
            timed.append(line)
            continue
        phase = engine.Phase.COMPENSATE if line.compensation else engine.Phase.FORWARD
        _check_phase_of_any(tasks, phase, line)
        if isinstance(line, FailForGood):
            failure = Failure(type=line.type, message=line.message, retryable=False)
            lines.append((line.step, phase, ReplyPayload(ok=False, failure=failure), 1))
        elif isinstance(line, Fail):
            failure = Failure(type=line.type, message=line.message, retryable=True)
            lines.append((line.step, phase, ReplyPayload(ok=False, failure=failure), line.times))
        else:
            lines.append((line.step, phase, None, line.times))
    return lines, timed


def _sending(
    definition: Saga, line: SendEvent | SendSignal, sagas: Sequence[Saga], number: int
) -> SendEvent | SendSignal:
    """`line` checked (what it names exists; an event Warren would accept) and given an id."""
    if line.when_waiting is not None and line.step is not None:
        raise HarnessError(
            f"{type(line).__name__} gives both when_waiting and step: say one moment (or neither: "
            "at the start)"
        )
    if line.step is not None:
        tasks_for(definition, line.step, sagas)
    if line.when_waiting is not None:
        waits_for(definition, line.when_waiting, sagas)
    if isinstance(line, SendSignal):
        return line if line.id is not None else replace(line, id=f"signal-{number}")
    line = line if line.id is not None else replace(line, id=f"event-{number}")
    assert line.id is not None
    try:
        validate(
            CloudEvent(
                id=line.id,
                source=line.source,
                type=line.type,
                time=line.time,
                subject=line.subject,
                dataversion=line.dataversion,
                data=line.data,
            )
        )
    except WarrenError as refused:
        raise HarnessError(f"SendEvent: {refused}") from refused
    return line


def names(selector: str, key: str) -> bool:
    """Does a script's step (a step's name, or a full key such as ``seats[1]/assign`` or
    ``pay/hold_funds``) name the step key `key` (prefixed with the child nodes it runs under)?
    A name names the step in every map item and every child saga it runs in."""
    return selector == key or ("/" not in selector and selector == node_name(key))


@dataclass(frozen=True, slots=True)
class _Nameable:
    """A step (or child saga node) a script may name, and what it runs inside: each map
    (``name[i]/`` in a key) and child saga node (``name/``), outermost first."""

    task: Task | WaitFor
    inside: tuple[tuple[str, bool], ...]
    """(node name, whether it is a map)."""

    def named_by(self, selector: str) -> bool:
        *outer, name = selector.split("/")
        if name != self.task.name:
            return False
        if not outer:
            return True
        if len(outer) != len(self.inside):
            return False
        for part, (node, is_map) in zip(outer, self.inside, strict=True):
            if is_map:
                item = _ITEM.fullmatch(part)
                if item is None or item.group(1) != node:
                    return False
            elif part != node:
                return False
        return True

    @property
    def form(self) -> str:
        return "".join(f"{n}[i]/" if is_map else f"{n}/" for n, is_map in self.inside) + (
            self.task.name
        )


def tasks_for(definition: Saga, selector: str, sagas: Sequence[Saga] = ()) -> list[Task]:
    """The steps (or child saga nodes) a script line names: by name, in the saga and any child
    saga it starts (of `sagas`); or by key: one map item's step (``seats[1]/assign_seat``), a
    child's step (``pay/hold_funds``). HarnessError when none has it."""
    found = [
        each.task
        for each in _nameable(definition, sagas)
        if isinstance(each.task, Step | ChildSaga) and each.named_by(selector)
    ]
    if not found:
        raise HarnessError(
            f"the script names step {selector!r}, which saga {definition.name!r} does not have "
            f"(its steps: {', '.join(step_names(definition, sagas))})"
        )
    return found


def step_names(definition: Saga, sagas: Sequence[Saga] = ()) -> list[str]:
    """What a script may name, in definition order: each step's name, shown with the maps
    and child sagas it runs in (``seats[i]/assign_seat``, ``pay/hold_funds``)."""
    return list(
        dict.fromkeys(
            each.form
            for each in _nameable(definition, sagas)
            if isinstance(each.task, Step | ChildSaga)
        )
    )


def waits_for(definition: Saga, selector: str, sagas: Sequence[Saga] = ()) -> list[WaitFor]:
    """The waits a script line's `when_waiting` names (by name or key, as for steps)."""
    everything = _nameable(definition, sagas)
    found = [
        each.task
        for each in everything
        if isinstance(each.task, WaitFor) and each.named_by(selector)
    ]
    if not found:
        known = [each.form for each in everything if isinstance(each.task, WaitFor)]
        raise HarnessError(
            f"the script names wait {selector!r}, which saga {definition.name!r} does not have "
            f"(its waits: {', '.join(dict.fromkeys(known)) or 'none'})"
        )
    return [wait for wait in found if isinstance(wait, WaitFor)]


_ITEM = re.compile(r"([a-z][a-z0-9_.-]*)\[(0|[1-9][0-9]*)\]")  # an index as the engine writes it


def _nameable(
    definition: Saga,
    sagas: Sequence[Saga],
    inside: tuple[tuple[str, bool], ...] = (),
    starting: frozenset[str] = frozenset(),
) -> list[_Nameable]:
    """Every step, child saga node and wait of `definition`, then of each child saga it may
    start (one that starts a saga already being started above it is not gone into again)."""
    starting = starting | {definition.name}
    found: list[_Nameable] = []

    def visit(nodes: Sequence[Node], around: tuple[tuple[str, bool], ...]) -> None:
        for node in nodes:
            if isinstance(node, Step | ChildSaga | WaitFor):
                found.append(_Nameable(node, around))
            if isinstance(node, ChildSaga):
                child = child_definition(node, sagas)
                if child is not None and child.name not in starting:
                    found.extend(_nameable(child, sagas, (*around, (node.name, False)), starting))
            inner = (*around, (node.name, True)) if isinstance(node, Map) else around
            for _, branch in children_of(node):
                visit(branch, inner)

    visit(definition.steps, inside)
    return found


def child_definition(node: ChildSaga, sagas: Sequence[Saga]) -> Saga | None:
    """The saga `node` starts, of `sagas`: its pinned version, or the newest given."""
    candidates = [
        saga
        for saga in sagas
        if saga.name == node.saga and (node.version is None or saga.version == node.version)
    ]
    return max(candidates, key=lambda saga: saga.version, default=None)


def _not_given(node: ChildSaga, sagas: Sequence[Saga]) -> Failure:
    """Why a child cannot start when its saga is not among those the harness has (on the
    servers: not registered)."""
    given = ", ".join(f"{saga.name} v{saga.version}" for saga in sagas) or "none"
    version = f" version {node.version}" if node.version is not None else ""
    return Failure(
        type="SagaNotFound",
        message=f"saga {node.saga!r}{version}, which node {node.name!r} starts, is not among "
        f"the sagas given to the harness (sagas=: {given})",
        retryable=False,
    )


def _check_phase_of_any(
    tasks: Sequence[Task], phase: engine.Phase, line: Fail | FailForGood | TimeOut
) -> None:
    """The line suits one of the tasks it names at least (a name may name a step in the parent
    and another in a child); else the first one's refusal."""
    refusals: list[HarnessError] = []
    for task in tasks:
        try:
            _check_phase(task, phase, line)
        except HarnessError as refused:
            refusals.append(refused)
        else:
            return
    raise refusals[0]


def _check_phase(step: Task, phase: engine.Phase, line: Fail | FailForGood | TimeOut) -> None:
    if isinstance(step, ChildSaga) and not isinstance(line, FailForGood):
        raise HarnessError(
            f"{type(line).__name__} on the child saga node {step.name!r}: a child answers once, "
            "when it ends; script FailForGood on the node (the child fails to start, or to be "
            "undone), or script the child's own steps"
        )
    if phase is engine.Phase.COMPENSATE and step.compensation is None:
        raise HarnessError(
            f"the script fails the compensation of step {step.name!r}, which has none"
        )
    if isinstance(line, Fail | TimeOut) and line.times is not None and line.times < 1:
        raise HarnessError(f"times must be 1 or more (or None for every attempt), not {line.times}")
    timeout = (
        step.timeout_seconds
        if phase is engine.Phase.FORWARD
        else step.compensation.timeout_seconds
        if step.compensation is not None
        else None
    )
    if isinstance(line, TimeOut) and timeout is None:
        what = "step" if phase is engine.Phase.FORWARD else "compensation of step"
        raise HarnessError(
            f"TimeOut on the {what} {step.name!r}, which has no timeout_seconds: a lost reply "
            "would be waited for forever; give it a timeout (or script Fail instead)"
        )
