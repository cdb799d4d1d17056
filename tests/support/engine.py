"""Builders for the engine's tests: events, a `Run` that drives one instance through `decide`
checking the invariants of every transition, and the sagas several test files share.

Time is a fixed UTC instant advanced by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from orchestrator.definitions import CHILD_POOL, Compensation, RetryPolicy, Saga, Step
from orchestrator.definitions.model import CANCEL_CHILD_COMMAND
from orchestrator.engine import (
    Dispatch,
    Event,
    Failure,
    HistoryEvent,
    InstanceState,
    Phase,
    SagaStatus,
    ScheduleTimer,
    Start,
    StepReply,
    StepStatus,
    TimerFired,
    TimerKind,
    Transition,
    decide,
    new_instance,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
INSTANCE_ID = UUID("0190c2a4-0000-7000-8000-000000000001")
FORWARD = Phase.FORWARD
COMPENSATE = Phase.COMPENSATE
NO_DELAY = RetryPolicy(max_attempts=3, initial_interval_seconds=0.0)
ONCE = RetryPolicy(max_attempts=1)


def ok(step: str, attempt: int = 1, phase: Phase = FORWARD, result: Any = None) -> StepReply:
    return StepReply(step=step, phase=phase, attempt=attempt, ok=True, result=result)


def fail(
    step: str,
    attempt: int = 1,
    phase: Phase = FORWARD,
    *,
    retryable: bool = True,
    type: str = "Boom",
) -> StepReply:
    failure = Failure(type=type, message=f"{step} attempt {attempt} failed", retryable=retryable)
    return StepReply(step=step, phase=phase, attempt=attempt, ok=False, failure=failure)


def timer(kind: TimerKind, step: str, attempt: int, phase: Phase = FORWARD) -> TimerFired:
    return TimerFired(kind=kind, step=step, phase=phase, attempt=attempt)


def scheduled(
    kind: TimerKind, step: str, attempt: int, after: float, phase: Phase = FORWARD
) -> ScheduleTimer:
    """The timer a transition schedules, due `after` seconds past NOW."""
    return ScheduleTimer(
        kind=kind, step=step, phase=phase, attempt=attempt, due_at=NOW + timedelta(seconds=after)
    )


def types(transition: Transition) -> list[str]:
    return [h.type for h in transition.history]


def sent(transition: Transition) -> list[tuple[str, Phase, int]]:
    return [(d.step, d.phase, d.attempt) for d in transition.dispatches]


class Run:
    """One instance driven through `decide`, checking the seq invariants on every transition."""

    def __init__(self, definition: Saga, input: Any = None, now: datetime = NOW) -> None:
        self.definition = definition
        self.now = now
        self.instance = new_instance(definition, INSTANCE_ID, input, now)
        self.history: list[HistoryEvent] = []
        self.dispatches: list[Dispatch] = []
        self.timers: list[ScheduleTimer] = []
        self.transitions: list[tuple[Event, Transition]] = []
        """Every event sent, with what it did (the record replay reads)."""

    def start(self, input: Any = None) -> Transition:
        return self.send(Start(input=input))

    def send(self, event: Event) -> Transition:
        before = self.instance
        transition = decide(self.definition, before, event, self.now)
        assert decide(self.definition, before, event, self.now) == transition  # deterministic
        check_transition(before, transition)
        self.instance = transition.instance
        self.transitions.append((event, transition))
        self.history.extend(transition.history)
        self.dispatches.extend(transition.dispatches)
        self.timers.extend(transition.timers)
        return transition

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    @property
    def status(self) -> SagaStatus:
        return self.instance.status

    def step_status(self, name: str) -> StepStatus:
        return self.instance.steps[name].status


def check_transition(before: InstanceState, transition: Transition) -> None:
    """Invariants every transition keeps, whatever the event."""
    seqs = [h.seq for h in transition.history]
    assert seqs == list(range(before.seq + 1, before.seq + 1 + len(seqs)))
    if transition.history:
        assert transition.instance.seq == seqs[-1]
    else:
        assert transition.instance == before
        assert not transition.dispatches
        assert not transition.timers
    by_seq = {h.seq: h for h in transition.history}
    for dispatch in transition.dispatches:
        event = by_seq[dispatch.seq]
        assert (event.step, event.phase, event.attempt) == (
            dispatch.step,
            dispatch.phase,
            dispatch.attempt,
        )
        assert event.pool == dispatch.pool
        if dispatch.command == CANCEL_CHILD_COMMAND:  # a parent stopping its child saga
            assert (event.type, dispatch.phase, dispatch.pool) == (
                "child_cancel_sent",
                FORWARD,
                CHILD_POOL,
            )
            continue
        expected = "step_dispatched" if dispatch.phase is FORWARD else "compensation_dispatched"
        assert event.type == expected
        assert event.data["command"] == dispatch.command
    assert transition.instance.id == before.id
    assert transition.instance.version == before.version


def three_steps(**retry: RetryPolicy) -> Saga:
    """reserve (compensated) -> ship (compensated, own pool) -> bill (not compensated)."""
    return Saga(
        name="orders",
        version=2,
        steps=(
            Step(
                name="reserve",
                pool="payments",
                command="credit.reserve",
                compensation=Compensation(command="credit.release"),
                retry=retry.get("reserve", NO_DELAY),
            ),
            Step(
                name="ship",
                pool="shipping",
                compensation=Compensation(command="cancel_shipment", pool="logistics"),
                retry=retry.get("ship", NO_DELAY),
            ),
            Step(name="bill", pool="payments", retry=retry.get("bill", NO_DELAY)),
        ),
    )


def three_steps_in(state: str, *, failing: str = "ship") -> Run:
    """A run of three_steps() brought to `state`: running (just started), completed,
    compensating (`failing` failed for good, the newest completed step's compensation in
    flight) or compensated."""
    run = Run(three_steps())
    run.start()
    names = [step.name for step in run.definition.steps]
    if state == "completed":
        for name in names:
            run.send(ok(name))
    elif state != "running":
        succeeded = names[: names.index(failing)]
        for name in succeeded:
            run.send(ok(name))
        run.send(fail(failing, retryable=False))
        if state == "compensated":
            for name in reversed(succeeded):
                run.send(ok(name, phase=COMPENSATE))
    assert run.status.value == state
    return run


def one_step(step: Step) -> Saga:
    return Saga(name="single", version=1, steps=(step,))


def undo_a_then(second: Step | None = None, **saga: Any) -> Saga:
    """a (undone by undo_a) then `second` (a plain b by default), on pool p; `saga` sets the
    saga's own options (a deadline…)."""
    return Saga(
        name="s",
        version=1,
        steps=(
            Step(name="a", pool="p", compensation=Compensation(command="undo_a")),
            second or Step(name="b", pool="p"),
        ),
        **saga,
    )


def compensation_gives_up_saga() -> Saga:
    """a's compensation has two attempts; b is compensable; c fails at its only attempt."""
    comp = Compensation(
        command="undo_a", retry=RetryPolicy(max_attempts=2, initial_interval_seconds=0)
    )
    return Saga(
        name="s",
        version=1,
        steps=(
            Step(name="a", pool="p", compensation=comp),
            Step(name="b", pool="p", compensation=Compensation(command="undo_b")),
            Step(name="c", pool="p", retry=ONCE),
        ),
    )
