"""One harness run: the real engine and the worker runtime's handler path, over an in-memory
wire, on a virtual clock.

The loop mirrors the processes: the orchestrator side applies an event with `decide`, turns the
transition's dispatches into commands with the shell's builder (`messaging.outgoing`), and
keeps its timers; the worker side decodes a command, runs the handler as `workers.runtime` does
and builds the reply with the runtime's builder; the orchestrator decodes the reply and applies
it. When nothing is in flight, the clock jumps to the next timer.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator import engine
from orchestrator.definitions import ChildSaga, Map, Step
from orchestrator.definitions.model import children_of, node_name
from orchestrator.messaging.envelope import Command, Reply, ReplyPayload, decode, new_message_id
from orchestrator.messaging.failure import Failure
from orchestrator.messaging.outgoing import command_for, reply_to
from orchestrator.messaging.topology import Topology
from orchestrator.service.transitions import reply_event
from orchestrator.storage.database import create_engine
from workers.app import Handler, HandlerSpec, NoSession
from workers.runtime import handler_chain, run_handler, step_context
from workers.testing import (
    Cancel,
    Fail,
    FailForGood,
    HarnessError,
    SagaResult,
    TimeOut,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    from sqlalchemy.ext.asyncio import AsyncEngine

    from orchestrator.definitions import Node, Saga, Task
    from orchestrator.engine import Event, HistoryEvent, InstanceState, ScheduleTimer
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


@dataclass(slots=True)
class _Wire:
    """Stands in for RabbitMQ: what is published is delivered in order, each message once."""

    topology: Topology
    queue: deque[_Delivery] = field(default_factory=deque)

    def publish(self, message: OutboxMessage) -> None:
        """What the relay would publish of an outbox message: its address and body."""
        self.queue.append(_Delivery(message.exchange, message.routing_key, message.body))


class Run:
    """One instance of one saga, from its start until nothing is left to do."""

    def __init__(
        self,
        definition: Saga,
        worker: Worker | None,
        script: Sequence[Outcome],
        *,
        database_url: str | None,
        now: datetime,
    ) -> None:
        self.definition = definition
        self.worker = worker
        self.database_url = database_url
        self.database: AsyncEngine | None = None
        self.started_at = self.now = now
        self.wire = _Wire(Topology(namespace="harness"))
        self.timers: list[tuple[datetime, int, ScheduleTimer]] = []
        self.order = itertools.count()  # timers due at once fire in the order they were set
        self.history: list[HistoryEvent] = []
        self.state: InstanceState
        self.lines, self.cancels = _compile(definition, script)
        self.outcomes: dict[tuple[str, engine.Phase], _Scripted] = {}
        # The app's middlewares run around its handlers here as in a worker.
        self.chain = handler_chain(worker) if worker is not None else None

    async def to_the_end(self, input: Any, instance_id: UUID | None) -> SagaResult:
        self.state = engine.new_instance(
            self.definition, instance_id or new_message_id(), input, self.now
        )
        try:
            await self.apply(engine.Start(input=input))
            for _ in range(_MAX_EVENTS):
                if not await self.step():
                    return self.result()
        finally:
            if self.database is not None:
                await self.database.dispose()
        raise HarnessError(
            f"saga {self.definition.name!r} was still going after {_MAX_EVENTS} messages and "
            "timers: does the script fail a step forever with a retry policy that never ends?"
        )

    async def step(self) -> bool:
        """Deliver the next message, or fire the next timer when none is in flight; False when
        nothing is left to do."""
        if self.wire.queue:
            delivery = self.wire.queue.popleft()
            if delivery.exchange == self.wire.topology.commands_exchange:
                await self.work(delivery)
            else:
                reply = decode(delivery.body)
                assert isinstance(reply, Reply)
                await self.apply(reply_event(reply), causation_id=reply.id)
            return True
        if self.state.status.terminal or not self.timers:
            return False  # a finished saga's timers would change nothing
        due, _, timer = heapq.heappop(self.timers)
        self.now = max(self.now, due)
        event = engine.TimerFired(
            kind=timer.kind, step=timer.step, phase=timer.phase, attempt=timer.attempt
        )
        await self.apply(event)
        return True

    # ---- the orchestrator's side --------------------------------------------------------------

    async def apply(self, event: Event, *, causation_id: UUID | None = None) -> None:
        transition = engine.decide(self.definition, self.state, event, self.now)
        self.state = transition.instance
        self.history += transition.history
        if isinstance(event, engine.StepReply):
            # As the shell does: the attempt replied, its timeout has nothing left to do.
            self.timers = [
                item
                for item in self.timers
                if not (
                    item[2].kind is engine.TimerKind.TIMEOUT
                    and (item[2].step, item[2].phase, item[2].attempt)
                    == (event.step, event.phase, event.attempt)
                )
            ]
            heapq.heapify(self.timers)
        for timer in transition.timers:
            heapq.heappush(self.timers, (timer.due_at, next(self.order), timer))
        for dispatch in transition.dispatches:
            self.wire.publish(
                command_for(self.state, dispatch, self.wire.topology, causation_id=causation_id)
            )
        for cancel in self.cancels_due(transition.history):
            await self.apply(engine.Cancel(reason=cancel.reason))

    def cancels_due(self, history: Sequence[HistoryEvent]) -> list[Cancel]:
        due = []
        for event in history:
            at = {"step_dispatched": "dispatched", "step_succeeded": "succeeded"}.get(event.type)
            for cancel in list(self.cancels):
                if at == cancel.at and event.step is not None and names(cancel.step, event.step):
                    self.cancels.remove(cancel)
                    due.append(cancel)
        return due

    # ---- the worker's side --------------------------------------------------------------------

    async def work(self, delivery: _Delivery) -> None:
        command = decode(delivery.body)
        assert isinstance(command, Command)
        scripted = self.scripted(command.step, command.phase)
        if scripted.pending():
            payload = scripted.take()
            if payload is None:
                return  # lost: the attempt's timeout will fire
        else:
            payload = await self.handle(command, delivery.routing_key)
        self.wire.publish(reply_to(command, payload, self.wire.topology))

    def scripted(self, key: str, phase: engine.Phase) -> _Scripted:
        """The scripted replies of one step phase: its own copy of every line that names it
        (by its key, or by its name for every map item), in script order."""
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
            payload = await run_handler(guarded, step_context(command, None), pool, self.chain)
        else:
            if self.database is None:
                self.database = create_engine(self.database_url, pool_size=1)
            async with AsyncSession(self.database) as session:
                # One transaction per handler call: its writes commit with its success.
                payload = await run_handler(
                    guarded, step_context(command, session), pool, self.chain
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

    def result(self) -> SagaResult:
        state = self.state
        path = list(dict.fromkeys(e.step for e in self.history if e.type == "step_dispatched"))
        cases = {
            e.step: e.data["case"]
            for e in self.history
            if e.type == "case_chosen" and e.step is not None
        }
        return SagaResult(
            instance_id=state.id,
            status=state.status,
            path=[step for step in path if step is not None],
            compensated=[
                e.step
                for e in self.history
                if e.type == "compensation_succeeded" and e.step is not None
            ],
            cases=cases,
            results=state.results(),
            attempts={name: state.steps[name].attempt for name in path if name is not None},
            failure=state.failure,
            history=[e.type for e in self.history],
            events=list(self.history),
            instance=state,
            elapsed_seconds=(self.now - self.started_at) / timedelta(seconds=1),
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


_Line = tuple[str, engine.Phase, ReplyPayload | None, int | None]
"""A compiled script line: the step it names (a name or a key), the phase, the reply (None: no
reply at all) and the attempts it answers (None: every one)."""


def _compile(definition: Saga, script: Sequence[Outcome]) -> tuple[list[_Line], list[Cancel]]:
    """The scripted replies, in script order, and the cancels; a line that names what the saga
    does not have is refused here."""
    lines: list[_Line] = []
    cancels: list[Cancel] = []
    for line in script:
        step = task_for(definition, line.step)
        if isinstance(line, Cancel):
            cancels.append(line)
            continue
        phase = engine.Phase.COMPENSATE if line.compensation else engine.Phase.FORWARD
        _check_phase(step, phase, line)
        if isinstance(line, FailForGood):
            failure = Failure(type=line.type, message=line.message, retryable=False)
            lines.append((line.step, phase, ReplyPayload(ok=False, failure=failure), 1))
        elif isinstance(line, Fail):
            failure = Failure(type=line.type, message=line.message, retryable=True)
            lines.append((line.step, phase, ReplyPayload(ok=False, failure=failure), line.times))
        else:
            lines.append((line.step, phase, None, line.times))
    return lines, cancels


def names(selector: str, key: str) -> bool:
    """Does a script's step (a step's name, or a full key such as ``seats[1]/assign``) name
    the step key `key`? A name names the step in every map item it runs in."""
    return selector == key or ("/" not in selector and selector == node_name(key))


def task_for(definition: Saga, selector: str) -> Task:
    """The step (or child saga) a script line names: by its name, or, inside a map, by the
    full key of one item's step (``seats[1]/assign``); HarnessError when the saga has none."""
    forms = _key_forms(definition.steps)
    *items, name = selector.split("/")
    form = forms.get(name)
    maps = [_ITEM.fullmatch(item) for item in items]
    if form is None or (items and [m.group(1) if m else None for m in maps] != form):
        raise HarnessError(
            f"the script names step {selector!r}, which saga {definition.name!r} does not have "
            f"(its steps: {', '.join(step_names(definition))})"
        )
    return definition.step(name)


def step_names(definition: Saga) -> list[str]:
    """What a script may name, in definition order: each step's name, shown with the maps it
    runs in (``seats[i]/assign_seat``)."""
    return [
        "".join(f"{map_name}[i]/" for map_name in maps) + name
        for name, maps in _key_forms(definition.steps).items()
    ]


_ITEM = re.compile(r"([a-z][a-z0-9_.-]*)\[(0|[1-9][0-9]*)\]")  # an index as the engine writes it


def _key_forms(nodes: Sequence[Node], maps: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Each step's (and child saga's) name, with the maps it runs inside, outermost first."""
    forms: dict[str, list[str]] = {}
    for node in nodes:
        if isinstance(node, Step | ChildSaga):
            forms[node.name] = list(maps)
        inside = (*maps, node.name) if isinstance(node, Map) else maps
        for _, inner in children_of(node):
            forms |= _key_forms(inner, inside)
    return forms


def _check_phase(step: Task, phase: engine.Phase, line: Fail | FailForGood | TimeOut) -> None:
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
