"""Test a saga and its handlers in pytest, in milliseconds: no RabbitMQ, no Warren database.

    from workers.testing import Fail, FailForGood, SagaHarness

    harness = SagaHarness(trip, worker)
    result = await harness.run(input={"traveller": "ada"}, script=[FailForGood(step="charge_card")])
    assert result.status == "compensated"
    assert result.compensated == ["book_hotel", "book_flight"]

One process runs the real engine (`decide`) and your handlers, as written, over an in-memory
transport: commands and replies are encoded and decoded as on the wire, each handler gets a
`StepContext` built as the worker runtime builds it, and its result or exception becomes the
reply the runtime would send. Time is virtual: when nothing is in flight the clock jumps to
the next timer (a retry, a timeout, a delay, the deadline), so a saga that would take minutes
runs at once.

A *script* changes what happens without touching handler code: `Fail` (retryable, n times),
`FailForGood` (a business failure), `TimeOut` (no reply: the step's timeout fires), each for a
step or (``compensation=True``) its compensation, and `Cancel` (an operator's cancel at a
given point). A line names a step by its name; inside a `Map` the name stands for the step in
every item (each item gets its own copy of the line), and the full key of one item's step,
``seats[1]/assign_seat``, names that item's alone.

A `ChildSaga` node runs in the same run: give the harness the sagas its nodes may start
(``SagaHarness(order, worker, sagas=[payment])``; the pinned version, or the newest given) and
each child runs as its own instance, on the same transport and clock, as the orchestrators run
it. A script's step name names the step in the saga and in every child saga; a key prefixed
with the child node's key (``pay/hold_funds``) names it in that child alone; `FailForGood` on
the node itself answers for the child (it never starts, or its undo fails). `Cancel` always
cancels the saga under test (which cancels a running child), whichever saga's step it names.
The result has each child's own result, by node key (`SagaResult.children`).

A `WaitFor` node waits for what the script sends: `SendEvent` (a domain event) and
`SendSignal`, at the start, when a given wait begins (``when_waiting=``) or at a step (as
`Cancel`). Events reach the waits of the saga and its children as the orchestrators match them
(kept until a wait takes them, each instance once), the events the sagas publish too; a wait's
timeout fires on the virtual clock. The result lists what the sagas published
(`SagaResult.emitted`) and what each wait received. A wait nothing will end stops the run with
a `HarnessError` naming the line that would end it.

Handlers registered as transactional get ``ctx.session`` on a real database when the harness
is given ``database_url=``: one transaction per handler call, committed when it succeeds and
rolled back when it raises, as in a worker.

The engine is imported when a harness runs, not when this module is: ``import workers`` stays
free of the orchestrator's engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from orchestrator.errors import WarrenError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    from orchestrator.definitions import Saga
    from orchestrator.engine import HistoryEvent, InstanceState, SagaStatus
    from orchestrator.messaging.failure import Failure
    from workers.app import Worker

__all__ = [
    "Cancel",
    "EmittedEvent",
    "Fail",
    "FailForGood",
    "HarnessError",
    "Outcome",
    "SagaHarness",
    "SagaResult",
    "SendEvent",
    "SendSignal",
    "TimeOut",
]


class HarnessError(WarrenError):
    """The test cannot run as written (a script naming an unknown step, a handler that needs a
    database the harness was not given, a saga that never ends…); the message says what to do."""


# ---- the script ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Fail:
    """The step's first `times` attempts fail, retryably, without running the handler (as if
    it raised): the step's retry policy decides what follows. Later attempts run the handler."""

    step: str
    times: int | None = 1
    """How many attempts fail; None: every attempt (the step fails once its retries run out)."""
    compensation: bool = False
    """Fail the step's compensation instead of the step."""
    type: str = "ScriptedFailure"
    """The failure's type, as the engine and the history see it."""
    message: str = "failed by the test's script"


@dataclass(frozen=True, kw_only=True, slots=True)
class FailForGood:
    """The step's next attempt fails for good, as if the handler raised `StepFailed`: no retry;
    the saga compensates (or, for a compensation, ends `failed`)."""

    step: str
    type: str = "StepFailed"
    """The failure's type (e.g. ``CardDeclined``), as ``StepFailed(..., type=...)`` gives it."""
    message: str = "failed for good by the test's script"
    compensation: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class TimeOut:
    """The step's first `times` attempts never reply: their timeout fires (the step needs a
    ``timeout_seconds``, or its compensation one, for this to end)."""

    step: str
    times: int | None = 1
    """How many attempts are lost; None: every attempt."""
    compensation: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Cancel:
    """Cancel the instance (as `warren cancel` does) at a point of its run."""

    step: str
    at: Literal["dispatched", "succeeded"] = "succeeded"
    """``succeeded``: right after `step`'s success is applied (the command of the step after
    it is out by then, as when a real cancel arrives at that moment). ``dispatched``: once
    `step`'s first command is out, before its handler runs. A step that succeeds after the
    cancel is compensated too."""
    reason: str = "cancelled by the test's script"


@dataclass(frozen=True, kw_only=True, slots=True)
class SendEvent:
    """Deliver a domain event, as one published to Warren arrives: it reaches the waits under
    way that take it (its type, and its value at a wait's correlation path), in the saga and in
    its child sagas, each instance once; a wait that begins later takes it then.

    When: with neither `when_waiting` nor `step`, before the instance starts (kept until a
    wait takes it); `when_waiting`: as soon as that wait began (a wait's name: the first of
    that name to begin; or its key: ``parcels[1]/delivered``, ``pay/approval``); `step` and
    `at`: as for `Cancel`."""

    type: str
    data: Any = None
    source: str = "test"
    id: str | None = None
    """None: ``event-<n>``, n its place among the script's events. The same source and id
    twice is one event sent twice: the copy is dropped, as Warren drops it."""
    subject: str | None = None
    time: datetime | None = None
    """None: the virtual clock's reading when it is sent."""
    dataversion: int = 1
    """The version of `data`'s shape: registered upcasters bring it to the current one."""
    when_waiting: str | None = None
    step: str | None = None
    at: Literal["dispatched", "succeeded"] = "succeeded"


@dataclass(frozen=True, kw_only=True, slots=True)
class SendSignal:
    """Send a signal to an instance, as ``POST /v1/instances/{id}/signals/{name}`` does: the
    oldest wait under way for it takes it, else the instance keeps it for a later wait.

    When, and to which instance: with neither `when_waiting` nor `step`, the saga under test,
    right after it started; `when_waiting`: the instance whose wait (name or key) began, as
    soon as it began; `step` and `at` (as for `Cancel`): the instance whose step it was."""

    name: str
    data: Any = None
    id: str | None = None
    """None: ``signal-<n>``, n its place among the script's signals. An id sent twice to one
    instance is dropped the second time, as Warren drops it."""
    when_waiting: str | None = None
    step: str | None = None
    at: Literal["dispatched", "succeeded"] = "succeeded"


Outcome: TypeAlias = Fail | FailForGood | TimeOut | Cancel | SendEvent | SendSignal
"""One line of a script."""


# ---- the result ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class EmittedEvent:
    """A domain event a saga of the run published (its `emits`)."""

    type: str
    data: Any
    instance_id: UUID
    saga: str
    child: str | None
    """None for the saga under test; for a child saga's, the key of the node that started it
    as a script names it (``pay``, ``parts[1]/pay``)."""
    id: str
    dataversion: int
    at: datetime
    """When it was published, on the virtual clock."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SagaResult:
    """How a run ended, read from the instance's snapshot and history."""

    instance_id: UUID
    status: SagaStatus
    """The instance's status: compare with a string (``result.status == "compensated"``).
    Not terminal when the saga waits for something that never comes (a lost reply with no
    timeout)."""
    path: list[str]
    """Steps in the order they ran (first dispatched), the one that failed included. A step
    inside a map's item is there by its key, once per item: ``seats[1]/assign_seat``; a
    choice's steps only for the case it took."""
    compensated: list[str]
    """Steps (keys, as in `path`) whose compensation succeeded, in the order they were undone."""
    cases: dict[str, str]
    """The case each choice took (``default`` for its default), by the choice's name (its key
    inside a map's item)."""
    results: dict[str, Any]
    """Each succeeded step's result, by step name; a map's as a list, one dict per item in item
    order (``results["seats"][1]["assign_seat"]``)."""
    attempts: dict[str, int]
    """Attempts each step that ran took, by key as in `path` (its compensation's are in
    `instance`)."""
    failure: Failure | None
    """Why the saga left the happy path (the first cause)."""
    history: list[str]
    """The history's event types, in sequence order (``saga_started``, ``step_dispatched``…)."""
    events: list[HistoryEvent]
    """The history itself: each event with its step, phase, attempt, time and data."""
    instance: InstanceState
    """The final snapshot, as Warren would store it."""
    elapsed_seconds: float
    """Virtual time the run took: retry delays, timeouts and step delays add up here (a
    child's: from its start to its last change)."""
    emitted: list[EmittedEvent] = field(default_factory=list)
    """The domain events it published (its `emits`), its child sagas' too, in order."""
    received: dict[str, Any] = field(default_factory=dict)
    """What each satisfied wait received (the event, or the signal), by key as in `path`."""
    children: dict[str, SagaResult] = field(default_factory=dict)
    """The child sagas its `ChildSaga` nodes started, by node key (``pay``, inside a map's
    item ``seats[1]/pay``); each with its own path, compensations and children. The node itself
    is in `path` and `compensated` as a step is."""


# ---- the harness --------------------------------------------------------------------------------


class SagaHarness:
    """Runs one saga definition against a `Worker`'s handlers, in memory.

    `worker` None runs the definition alone: every command succeeds with an empty result
    unless the script says otherwise (`warren simulate` does this). `sagas` are the sagas its
    `ChildSaga` nodes may start (and theirs): a node whose saga is not among them fails as an
    unregistered one does on the servers (``SagaNotFound``). `database_url` (a
    ``postgresql://`` URL of a database where the handlers' tables exist) gives transactional
    handlers a real ``ctx.session``; without it, a handler that uses the session stops the run
    with a `HarnessError` saying so. `start` is the virtual clock's first reading (now, by
    default).
    """

    def __init__(
        self,
        saga: Saga,
        worker: Worker | None = None,
        *,
        sagas: Sequence[Saga] = (),
        database_url: str | None = None,
        start: datetime | None = None,
    ) -> None:
        self.saga = saga
        self.worker = worker
        self.sagas = tuple(sagas)
        self.database_url = database_url
        self.start = start
        _refuse_ambiguous_sagas(self.sagas)
        if worker is not None:
            _check_handlers([saga, *self.sagas], worker)

    async def run(
        self,
        *,
        input: Any,
        script: Sequence[Outcome] = (),
        instance_id: UUID | None = None,
    ) -> SagaResult:
        """Start an instance with `input` and run it until it ends (or can go no further)."""
        from workers.testing._run import Run  # the engine, loaded only when a harness runs

        run = Run(
            self.saga,
            self.worker,
            script,
            sagas=self.sagas,
            database_url=self.database_url,
            now=self.start or datetime.now(UTC),
        )
        return await run.to_the_end(input, instance_id)


def _refuse_ambiguous_sagas(sagas: Sequence[Saga]) -> None:
    """Two different definitions under one name and version: which one a child runs would be
    a guess (the registry refuses this too)."""
    seen: dict[tuple[str, int], Saga] = {}
    for saga in sagas:
        earlier = seen.setdefault((saga.name, saga.version), saga)
        if earlier is not saga and earlier != saga:
            raise HarnessError(
                f"sagas= has two different definitions of saga {saga.name!r} version "
                f"{saga.version}: give each version once"
            )


def _check_handlers(sagas: Sequence[Saga], worker: Worker) -> None:
    """Every command the sagas send has a handler: say which do not now, not mid-run (a child
    saga node's orders are the orchestrators', which the harness serves itself)."""
    from workers.check import check, missing_message

    missing = check(sagas, worker).missing
    if missing:
        raise HarnessError("; ".join(missing_message(found, worker.name) for found in missing))
