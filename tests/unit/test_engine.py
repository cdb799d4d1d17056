"""The pure engine: `decide(definition, instance, event, now) -> Transition`.

Example-based tests first, then property-based tests that drive random sagas through random
schedules of replies, duplicates, timers and operator actions. Time is a fixed UTC instant advanced by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.definitions import Compensation, RetryPolicy, Saga, Step
from orchestrator.engine import (
    Cancel,
    Dispatch,
    Event,
    HistoryEvent,
    InstanceState,
    Phase,
    Resume,
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
from orchestrator.messaging.failure import Failure

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
INSTANCE_ID = UUID("0190c2a4-0000-7000-8000-000000000001")
FORWARD = Phase.FORWARD
COMPENSATE = Phase.COMPENSATE
NO_DELAY = RetryPolicy(max_attempts=3, initial_interval_seconds=0.0)
ONCE = RetryPolicy(max_attempts=1)


# ---- helpers ------------------------------------------------------------------------------------


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

    def start(self, input: Any = None) -> Transition:
        return self.send(Start(input=input))

    def send(self, event: Event) -> Transition:
        before = self.instance
        transition = decide(self.definition, before, event, self.now)
        assert decide(self.definition, before, event, self.now) == transition  # deterministic
        check_transition(before, transition)
        self.instance = transition.instance
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
        expected = "step_dispatched" if dispatch.phase is FORWARD else "compensation_dispatched"
        assert event.type == expected
        assert (event.step, event.phase, event.attempt) == (
            dispatch.step,
            dispatch.phase,
            dispatch.attempt,
        )
        assert event.data["command"] == dispatch.command
        assert event.pool == dispatch.pool
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


def one_step(step: Step) -> Saga:
    return Saga(name="single", version=1, steps=(step,))


# ---- start and the happy path -------------------------------------------------------------------


def test_new_instance_is_pinned_to_the_definition_and_all_pending() -> None:
    definition = three_steps()
    instance = new_instance(definition, INSTANCE_ID, {"order": 7}, NOW)
    assert instance.id == INSTANCE_ID
    assert (instance.saga, instance.version) == ("orders", 2)
    assert instance.status is SagaStatus.RUNNING
    assert instance.input == {"order": 7}
    assert instance.seq == 0
    assert instance.completed == ()
    assert list(instance.steps) == ["reserve", "ship", "bill"]
    assert all(s.status is StepStatus.PENDING and s.attempt == 0 for s in instance.steps.values())
    assert instance.created_at == instance.updated_at == NOW


def test_start_dispatches_the_first_step() -> None:
    run = Run(three_steps(), {"order": 7})
    t = run.start({"order": 7})
    assert types(t) == ["saga_started", "step_dispatched"]
    assert t.history[0].data == {"version": 2}
    assert t.dispatches == (
        Dispatch(
            step="reserve",
            phase=FORWARD,
            command="credit.reserve",
            pool="payments",
            attempt=1,
            seq=2,
        ),
    )
    assert t.timers == ()
    state = t.instance.steps["reserve"]
    assert (state.status, state.attempt, state.started_at) == (StepStatus.RUNNING, 1, NOW)
    assert t.instance.seq == 2
    assert all(h.at == NOW for h in t.history)


def test_happy_path_runs_every_step_in_order_and_completes() -> None:
    run = Run(three_steps())
    run.start()
    run.advance(1)
    t = run.send(ok("reserve", result={"hold": "h-1"}))
    assert types(t) == ["step_succeeded", "step_dispatched"]
    assert t.history[0].data == {"result": {"hold": "h-1"}}
    assert sent(t) == [("ship", FORWARD, 1)]
    assert t.dispatches[0].pool == "shipping"
    assert t.dispatches[0].command == "ship"
    run.advance(1)
    t = run.send(ok("ship", result="tracking-9"))
    assert sent(t) == [("bill", FORWARD, 1)]
    run.advance(1)
    t = run.send(ok("bill"))
    assert types(t) == ["step_succeeded", "saga_completed"]
    assert t.dispatches == ()
    assert run.status is SagaStatus.COMPLETED
    assert run.status.terminal
    assert run.instance.completed == ("reserve", "ship", "bill")
    assert run.instance.results() == {
        "reserve": {"hold": "h-1"},
        "ship": "tracking-9",
        "bill": None,
    }
    assert all(s.status is StepStatus.SUCCEEDED for s in run.instance.steps.values())
    assert run.instance.steps["ship"].started_at == NOW + timedelta(seconds=1)
    assert run.instance.steps["ship"].finished_at == NOW + timedelta(seconds=2)
    assert run.instance.updated_at == NOW + timedelta(seconds=3)
    assert run.instance.failure is None
    assert [h.type for h in run.history] == [
        "saga_started",
        "step_dispatched",
        "step_succeeded",
        "step_dispatched",
        "step_succeeded",
        "step_dispatched",
        "step_succeeded",
        "saga_completed",
    ]


def test_history_seq_is_contiguous_from_one_across_transitions() -> None:
    run = Run(three_steps())
    run.start()
    run.send(ok("reserve"))
    run.send(ok("reserve"))  # ignored, but recorded
    run.send(fail("ship"))
    run.send(timer(TimerKind.TIMEOUT, "ship", 1))  # stale: no history at all
    run.send(fail("ship", 2, retryable=False))
    run.send(ok("reserve", phase=COMPENSATE))
    assert [h.seq for h in run.history] == list(range(1, len(run.history) + 1))
    assert run.instance.seq == len(run.history)
    assert run.status is SagaStatus.COMPENSATED


def test_every_dispatch_carries_the_seq_of_its_history_event() -> None:
    run = Run(three_steps())
    run.start()
    run.send(ok("reserve"))
    run.send(ok("ship"))
    run.send(fail("bill", retryable=False))
    run.send(ok("ship", phase=COMPENSATE))
    run.send(ok("reserve", phase=COMPENSATE))
    by_seq = {h.seq: h for h in run.history}
    assert len(run.dispatches) == 5
    for dispatch in run.dispatches:
        event = by_seq[dispatch.seq]
        assert event.type in ("step_dispatched", "compensation_dispatched")
        assert (event.step, event.phase, event.attempt) == (
            dispatch.step,
            dispatch.phase,
            dispatch.attempt,
        )
    assert len({d.seq for d in run.dispatches}) == len(run.dispatches)


def test_decide_does_not_change_its_input_instance() -> None:
    definition = three_steps()
    instance = new_instance(definition, INSTANCE_ID, None, NOW)
    snapshot = msgspec.json.encode(instance)
    transition = decide(definition, instance, Start(input=None), NOW)
    assert msgspec.json.encode(instance) == snapshot
    assert transition.instance.steps is not instance.steps


# ---- failure and compensation -------------------------------------------------------------------


def four_steps() -> Saga:
    """a (comp) -> b (no comp) -> c (comp, own pool) -> d (comp); business failures fail at once."""
    return Saga(
        name="trip",
        version=1,
        steps=(
            Step(name="a", pool="p1", compensation=Compensation(command="undo_a"), retry=ONCE),
            Step(name="b", pool="p1", retry=ONCE),
            Step(
                name="c",
                pool="p2",
                compensation=Compensation(command="undo_c", pool="p3"),
                retry=ONCE,
            ),
            Step(name="d", pool="p2", compensation=Compensation(command="undo_d"), retry=ONCE),
        ),
    )


@pytest.mark.parametrize("failing", [0, 1, 2, 3])
@pytest.mark.parametrize("retryable", [True, False])
def test_failure_at_each_step_compensates_completed_steps_in_reverse(
    failing: int, retryable: bool
) -> None:
    definition = four_steps()
    names = [s.name for s in definition.steps]
    run = Run(definition)
    run.start()
    for name in names[:failing]:
        run.send(ok(name))
    t = run.send(fail(names[failing], retryable=retryable, type="OutOfStock"))
    failure = Failure(
        type="OutOfStock", message=f"{names[failing]} attempt 1 failed", retryable=retryable
    )
    completed = names[:failing]
    expected = [n for n in reversed(completed) if definition.step(n).compensation is not None]
    then = "compensation_dispatched" if expected else "saga_compensated"
    assert types(t) == ["step_failed", "saga_compensating", then]
    assert t.history[0].data == {"failure": failure}
    assert run.instance.failure == failure
    assert run.instance.steps[names[failing]].error == failure
    undone: list[str] = []
    while run.status is SagaStatus.COMPENSATING:
        assert len(undone) < len(names), "compensation does not end"
        assert len(t.dispatches) == 1
        dispatch = t.dispatches[0]
        step = definition.step(dispatch.step)
        assert step.compensation is not None
        assert (dispatch.phase, dispatch.attempt) == (COMPENSATE, 1)
        assert dispatch.command == step.compensation.command
        assert dispatch.pool == step.compensation_pool
        assert run.step_status(dispatch.step) is StepStatus.COMPENSATING
        undone.append(dispatch.step)
        run.advance(1)
        t = run.send(ok(dispatch.step, phase=COMPENSATE))
    assert undone == expected
    assert run.status is SagaStatus.COMPENSATED
    assert run.history[-1].type == "saga_compensated"
    assert [d.step for d in run.dispatches if d.phase is FORWARD] == names[: failing + 1]
    for name in names:
        status = run.step_status(name)
        if name in expected:
            assert status is StepStatus.COMPENSATED
            assert run.instance.steps[name].compensated_at is not None
        elif name in completed:
            assert status is StepStatus.SUCCEEDED  # nothing to undo
        elif name == names[failing]:
            assert status is StepStatus.FAILED
        else:
            assert status is StepStatus.PENDING


def test_first_step_failing_compensates_nothing_in_one_transition() -> None:
    run = Run(three_steps(reserve=ONCE))
    run.start()
    t = run.send(fail("reserve", retryable=False))
    assert types(t) == ["step_failed", "saga_compensating", "saga_compensated"]
    assert t.dispatches == ()
    assert run.status is SagaStatus.COMPENSATED


def test_business_failure_fails_the_step_at_once_despite_attempts_left() -> None:
    run = Run(three_steps(reserve=RetryPolicy(max_attempts=5, initial_interval_seconds=0)))
    run.start()
    t = run.send(fail("reserve", retryable=False))
    assert "attempt_failed" not in types(t)
    assert run.step_status("reserve") is StepStatus.FAILED


def test_a_failure_reply_without_a_failure_counts_as_retryable_unknown() -> None:
    run = Run(three_steps())
    run.start()
    t = run.send(StepReply(step="reserve", phase=FORWARD, attempt=1, ok=False))
    assert types(t) == ["attempt_failed", "step_dispatched"]
    reported = t.history[0].data["failure"]
    assert isinstance(reported, Failure)
    assert (reported.type, reported.retryable) == ("UnknownFailure", True)


def test_non_retryable_errors_fail_the_step_at_once() -> None:
    policy = RetryPolicy(
        max_attempts=5, initial_interval_seconds=0, non_retryable_errors=("CardDeclined",)
    )
    run = Run(three_steps(reserve=policy))
    run.start()
    t = run.send(fail("reserve", retryable=True, type="NetworkGlitch"))
    assert sent(t) == [("reserve", FORWARD, 2)]  # another type is still retried
    t = run.send(fail("reserve", 2, retryable=True, type="CardDeclined"))
    assert types(t)[0] == "step_failed"
    assert run.step_status("reserve") is StepStatus.FAILED
    assert run.status is SagaStatus.COMPENSATED


def test_non_retryable_errors_of_a_compensation_fail_it_at_once() -> None:
    comp = Compensation(
        command="undo",
        retry=RetryPolicy(
            max_attempts=9, initial_interval_seconds=0, non_retryable_errors=("Gone",)
        ),
    )
    definition = Saga(
        name="s",
        version=1,
        steps=(Step(name="a", pool="p", compensation=comp), Step(name="b", pool="p", retry=ONCE)),
    )
    run = Run(definition)
    run.start()
    run.send(ok("a"))
    run.send(fail("b"))
    t = run.send(fail("a", phase=COMPENSATE, type="Gone"))
    assert types(t) == ["compensation_failed", "saga_failed"]
    assert run.status is SagaStatus.FAILED


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


def test_compensation_exhausted_fails_the_saga() -> None:
    run = Run(compensation_gives_up_saga())
    run.start()
    run.send(ok("a"))
    run.send(ok("b"))
    run.send(fail("c", retryable=False))
    run.send(ok("b", phase=COMPENSATE))
    t = run.send(fail("a", phase=COMPENSATE))
    assert types(t) == ["attempt_failed", "compensation_dispatched"]
    assert sent(t) == [("a", COMPENSATE, 2)]
    assert run.instance.steps["a"].compensation_attempt == 2
    t = run.send(fail("a", 2, phase=COMPENSATE, type="LedgerDown"))
    assert types(t) == ["compensation_failed", "saga_failed"]
    assert t.dispatches == ()
    assert run.status is SagaStatus.FAILED
    assert run.status.terminal
    state = run.instance.steps["a"]
    assert state.status is StepStatus.COMPENSATION_FAILED
    assert state.compensation_error is not None
    assert state.compensation_error.type == "LedgerDown"
    assert run.instance.failure is not None
    assert run.instance.failure.type == "Boom"  # the first cause stays; the rest is history
    assert run.step_status("b") is StepStatus.COMPENSATED
    assert t.history[1].data == {"failure": state.compensation_error}


def test_compensation_retry_with_delay_uses_a_timer() -> None:
    comp = Compensation(
        command="undo", retry=RetryPolicy(max_attempts=3, initial_interval_seconds=7)
    )
    definition = Saga(
        name="s",
        version=1,
        steps=(Step(name="a", pool="p", compensation=comp), Step(name="b", pool="p", retry=ONCE)),
    )
    run = Run(definition)
    run.start()
    run.send(ok("a"))
    run.send(fail("b"))
    t = run.send(fail("a", phase=COMPENSATE))
    assert t.dispatches == ()
    assert t.timers == (
        ScheduleTimer(
            kind=TimerKind.RETRY,
            step="a",
            phase=COMPENSATE,
            attempt=1,
            due_at=NOW + timedelta(seconds=7),
        ),
    )
    assert t.history[0].data["retry_in_seconds"] == 7.0
    assert run.step_status("a") is StepStatus.COMPENSATION_RETRY_WAIT
    assert run.send(ok("a", phase=COMPENSATE)).history[0].type == "reply_ignored"  # late duplicate
    run.advance(7)
    t = run.send(timer(TimerKind.RETRY, "a", 1, COMPENSATE))
    assert sent(t) == [("a", COMPENSATE, 2)]
    assert run.send(timer(TimerKind.RETRY, "a", 1, COMPENSATE)).history == ()  # fired twice
    run.send(ok("a", 2, phase=COMPENSATE))
    assert run.status is SagaStatus.COMPENSATED


def test_compensation_timeout_counts_as_a_failed_attempt() -> None:
    comp = Compensation(
        command="undo",
        timeout_seconds=5,
        retry=RetryPolicy(max_attempts=2, initial_interval_seconds=0),
    )
    definition = Saga(
        name="s",
        version=1,
        steps=(Step(name="a", pool="p", compensation=comp), Step(name="b", pool="p", retry=ONCE)),
    )
    run = Run(definition)
    run.start()
    run.send(ok("a"))
    t = run.send(fail("b"))
    assert t.timers == (
        ScheduleTimer(
            kind=TimerKind.TIMEOUT,
            step="a",
            phase=COMPENSATE,
            attempt=1,
            due_at=NOW + timedelta(seconds=5),
        ),
    )
    run.advance(5)
    t = run.send(timer(TimerKind.TIMEOUT, "a", 1, COMPENSATE))
    assert types(t) == ["attempt_timed_out", "attempt_failed", "compensation_dispatched"]
    run.advance(5)
    t = run.send(timer(TimerKind.TIMEOUT, "a", 2, COMPENSATE))
    assert types(t) == ["attempt_timed_out", "compensation_failed", "saga_failed"]
    assert run.instance.steps["a"].compensation_error == Failure(
        type="StepTimeout", message="attempt 2 did not reply in time", retryable=True
    )


# ---- retries and timers -------------------------------------------------------------------------


def test_retry_with_zero_delay_dispatches_the_next_attempt_at_once() -> None:
    run = Run(three_steps())
    run.start()
    run.advance(3)
    t = run.send(fail("reserve"))
    assert types(t) == ["attempt_failed", "step_dispatched"]
    assert t.history[0].data["retry_in_seconds"] == 0.0
    assert t.dispatches == (
        Dispatch(
            step="reserve",
            phase=FORWARD,
            command="credit.reserve",
            pool="payments",
            attempt=2,
            seq=4,
        ),
    )
    assert t.timers == ()
    state = run.instance.steps["reserve"]
    assert (state.status, state.attempt) == (StepStatus.RUNNING, 2)
    assert state.started_at == NOW  # the first attempt's start is kept
    run.send(ok("reserve", 2))
    assert run.step_status("reserve") is StepStatus.SUCCEEDED


def test_retries_run_out_after_max_attempts() -> None:
    run = Run(three_steps())
    run.start()
    run.send(fail("reserve", 1))
    run.send(fail("reserve", 2))
    t = run.send(fail("reserve", 3))
    assert types(t) == ["step_failed", "saga_compensating", "saga_compensated"]
    assert [d.attempt for d in run.dispatches] == [1, 2, 3]


def test_retry_with_delay_schedules_a_timer_that_dispatches_the_next_attempt() -> None:
    policy = RetryPolicy(max_attempts=3, initial_interval_seconds=5, backoff_coefficient=2)
    run = Run(three_steps(reserve=policy))
    run.start()
    run.advance(1)
    t = run.send(fail("reserve"))
    assert types(t) == ["attempt_failed"]
    assert t.history[0].data["retry_in_seconds"] == 5.0
    assert t.dispatches == ()
    due = NOW + timedelta(seconds=6)
    assert t.timers == (
        ScheduleTimer(kind=TimerKind.RETRY, step="reserve", phase=FORWARD, attempt=1, due_at=due),
    )
    assert run.step_status("reserve") is StepStatus.RETRY_WAIT

    run.now = due
    t = run.send(timer(TimerKind.RETRY, "reserve", 1))
    assert types(t) == ["step_dispatched"]
    assert sent(t) == [("reserve", FORWARD, 2)]
    assert run.step_status("reserve") is StepStatus.RUNNING

    t = run.send(fail("reserve", 2))
    assert t.timers[0].due_at == due + timedelta(seconds=10)  # backoff
    assert t.timers[0].attempt == 2
    run.advance(10)
    run.send(timer(TimerKind.RETRY, "reserve", 2))
    t = run.send(fail("reserve", 3))
    assert types(t)[0] == "step_failed"
    assert t.timers == ()


def test_a_late_success_after_the_last_timeout_is_compensated() -> None:
    """The last attempt timed out, the saga compensated, then the worker's success arrives:
    the effect is real, so the instance reopens and undoes it."""
    definition = Saga(
        name="s",
        version=1,
        steps=(
            Step(name="a", pool="p", compensation=Compensation(command="undo_a")),
            Step(
                name="b",
                pool="p",
                retry=ONCE,
                timeout_seconds=5,
                compensation=Compensation(command="undo_b"),
            ),
        ),
    )
    run = Run(definition)
    run.start()
    run.send(ok("a"))
    run.advance(5)
    t = run.send(timer(TimerKind.TIMEOUT, "b", 1))
    assert types(t)[:2] == ["attempt_timed_out", "step_failed"]
    run.send(ok("a", phase=COMPENSATE))
    assert run.status is SagaStatus.COMPENSATED

    t = run.send(ok("b", result={"charged": 5}))

    assert types(t) == ["step_succeeded_late", "saga_compensating", "compensation_dispatched"]
    assert sent(t) == [("b", COMPENSATE, 1)]
    t = run.send(ok("b", phase=COMPENSATE))
    assert types(t) == ["compensation_succeeded", "saga_compensated"]
    assert run.step_status("b") is StepStatus.COMPENSATED


def test_a_late_success_of_a_step_without_compensation_is_only_recorded() -> None:
    definition = one_step(Step(name="notify", pool="p", retry=ONCE, timeout_seconds=5))
    run = Run(definition)
    run.start()
    run.advance(5)
    run.send(timer(TimerKind.TIMEOUT, "notify", 1))
    assert run.status is SagaStatus.COMPENSATED

    t = run.send(ok("notify"))

    assert types(t) == ["step_succeeded_late"]
    assert run.status is SagaStatus.COMPENSATED


def timing_out_last_step() -> Saga:
    """a, b, c, each with a compensation; c has one attempt, which times out."""
    return Saga(
        name="s",
        version=1,
        steps=(
            Step(name="a", pool="p", compensation=Compensation(command="undo_a", retry=ONCE)),
            Step(name="b", pool="p", compensation=Compensation(command="undo_b")),
            Step(
                name="c",
                pool="p",
                retry=ONCE,
                timeout_seconds=5,
                compensation=Compensation(command="undo_c"),
            ),
        ),
    )


def test_a_late_success_while_compensating_is_undone_next() -> None:
    """It waits for the compensation in flight, then goes first: it is the newest effect."""
    run = Run(timing_out_last_step())
    run.start()
    run.send(ok("a"))
    run.send(ok("b"))
    run.advance(5)
    t = run.send(timer(TimerKind.TIMEOUT, "c", 1))
    assert sent(t) == [("b", COMPENSATE, 1)]

    t = run.send(ok("c", result={"late": True}))

    assert types(t) == ["step_succeeded_late"]
    assert t.dispatches == ()
    assert run.status is SagaStatus.COMPENSATING
    assert run.instance.completed == ("a", "b", "c")
    assert run.instance.steps["c"].result == {"late": True}
    assert sent(run.send(ok("b", phase=COMPENSATE))) == [("c", COMPENSATE, 1)]
    assert sent(run.send(ok("c", phase=COMPENSATE))) == [("a", COMPENSATE, 1)]
    run.send(ok("a", phase=COMPENSATE))
    assert run.instance.status is SagaStatus.COMPENSATED
    assert all(s.status is StepStatus.COMPENSATED for s in run.instance.steps.values())
    assert run.instance.failure is not None
    assert run.instance.failure.type == "StepTimeout"


def test_a_late_success_in_a_failed_saga_waits_for_the_resume() -> None:
    """A failed saga does nothing on its own; the resume retries the stuck compensation, then
    undoes the late step."""
    run = Run(timing_out_last_step())
    run.start()
    run.send(ok("a"))
    run.send(ok("b"))
    run.advance(5)
    run.send(timer(TimerKind.TIMEOUT, "c", 1))
    run.send(ok("b", phase=COMPENSATE))
    run.send(fail("a", phase=COMPENSATE))
    assert run.status is SagaStatus.FAILED

    t = run.send(ok("c"))

    assert types(t) == ["step_succeeded_late"]
    assert t.dispatches == ()
    assert run.status is SagaStatus.FAILED
    assert run.step_status("c") is StepStatus.SUCCEEDED
    assert sent(run.send(Resume())) == [("a", COMPENSATE, 2)]
    assert sent(run.send(ok("a", 2, COMPENSATE))) == [("c", COMPENSATE, 1)]
    run.send(ok("c", phase=COMPENSATE))
    assert run.instance.status is SagaStatus.COMPENSATED
    assert run.instance.failure is not None
    assert run.instance.failure.type == "StepTimeout"  # the first cause stays


def test_a_late_success_of_a_timed_out_attempt_abandoned_by_a_cancel_is_compensated() -> None:
    """Attempt 1 times out and its retry waits; a cancel abandons the step. We never heard
    attempt 1's outcome (a moment before the cancel its success would have counted), so when
    it succeeds after all, its effect is real and must be undone."""
    definition = Saga(
        name="s",
        version=1,
        steps=(
            Step(name="a", pool="p", compensation=Compensation(command="undo_a")),
            Step(
                name="b",
                pool="p",
                retry=RetryPolicy(max_attempts=2, initial_interval_seconds=1),
                timeout_seconds=5,
                compensation=Compensation(command="undo_b"),
            ),
        ),
    )
    run = Run(definition)
    run.start()
    run.send(ok("a"))
    run.advance(5)
    run.send(timer(TimerKind.TIMEOUT, "b", 1))
    assert run.step_status("b") is StepStatus.RETRY_WAIT
    run.send(Cancel())
    state = run.instance.steps["b"]
    assert state.status is StepStatus.FAILED
    assert state.error is not None
    assert state.error.type == "StepTimeout"  # how its last attempt ended stays known
    run.send(ok("a", phase=COMPENSATE))
    assert run.status is SagaStatus.COMPENSATED

    t = run.send(ok("b", 1))

    assert types(t) == ["step_succeeded_late", "saga_compensating", "compensation_dispatched"]
    assert sent(t) == [("b", COMPENSATE, 1)]


def test_a_dead_lettered_command_that_ran_after_all_succeeds_late() -> None:
    """The shell fails a dead-lettered command's attempt; replayed, it ran: undo it."""
    run = Run(three_steps())
    run.start()
    run.send(ok("reserve"))
    t = run.send(fail("ship", retryable=False, type="DeadLettered"))
    assert sent(t) == [("reserve", COMPENSATE, 1)]
    run.send(ok("reserve", phase=COMPENSATE))
    assert run.status is SagaStatus.COMPENSATED

    t = run.send(ok("ship"))

    assert types(t) == ["step_succeeded_late", "saga_compensating", "compensation_dispatched"]
    assert sent(t) == [("ship", COMPENSATE, 1)]
    run.send(ok("ship", phase=COMPENSATE))
    assert run.instance.status is SagaStatus.COMPENSATED
    assert run.instance.completed == ("reserve", "ship")
    assert run.instance.failure is not None
    assert run.instance.failure.type == "DeadLettered"


def test_a_contradicting_success_for_a_reported_failure_is_ignored() -> None:
    run = Run(three_steps())
    run.start()
    run.send(fail("reserve", retryable=False))

    assert types(run.send(ok("reserve"))) == ["reply_ignored"]


def test_timeout_of_the_running_attempt_counts_as_a_failed_retryable_attempt() -> None:
    definition = one_step(Step(name="charge", pool="payments", timeout_seconds=30, retry=NO_DELAY))
    run = Run(definition)
    t = run.start()
    assert t.timers == (
        ScheduleTimer(
            kind=TimerKind.TIMEOUT,
            step="charge",
            phase=FORWARD,
            attempt=1,
            due_at=NOW + timedelta(seconds=30),
        ),
    )
    run.advance(30)
    t = run.send(timer(TimerKind.TIMEOUT, "charge", 1))
    assert types(t) == ["attempt_timed_out", "attempt_failed", "step_dispatched"]
    failure = t.history[1].data["failure"]
    assert failure == Failure(
        type="StepTimeout", message="attempt 1 did not reply in time", retryable=True
    )
    assert sent(t) == [("charge", FORWARD, 2)]
    assert t.timers == (
        ScheduleTimer(
            kind=TimerKind.TIMEOUT,
            step="charge",
            phase=FORWARD,
            attempt=2,
            due_at=NOW + timedelta(seconds=60),
        ),
    )
    late = run.send(ok("charge", 1))  # the timed-out attempt succeeds after all: it counts
    assert types(late) == ["step_succeeded", "saga_completed"]
    assert types(run.send(ok("charge", 2))) == ["reply_ignored"]
    assert run.status is SagaStatus.COMPLETED


def test_timeout_on_the_last_attempt_fails_the_step() -> None:
    definition = one_step(Step(name="charge", pool="payments", timeout_seconds=1, retry=ONCE))
    run = Run(definition)
    run.start()
    run.advance(1)
    t = run.send(timer(TimerKind.TIMEOUT, "charge", 1))
    assert types(t) == ["attempt_timed_out", "step_failed", "saga_compensating", "saga_compensated"]
    error = run.instance.steps["charge"].error
    assert error is not None
    assert error.type == "StepTimeout"


def test_timeout_with_non_retryable_step_timeout_type_fails_at_once() -> None:
    policy = RetryPolicy(max_attempts=5, non_retryable_errors=("StepTimeout",))
    run = Run(one_step(Step(name="charge", pool="payments", timeout_seconds=1, retry=policy)))
    run.start()
    t = run.send(timer(TimerKind.TIMEOUT, "charge", 1))
    assert types(t)[:2] == ["attempt_timed_out", "step_failed"]


@pytest.mark.parametrize(
    "stale",
    [
        timer(TimerKind.TIMEOUT, "charge", 1),  # attempt 1 is over
        timer(TimerKind.RETRY, "charge", 1),  # already fired
        timer(TimerKind.RETRY, "charge", 2),  # attempt 2 is running, not waiting
        timer(TimerKind.TIMEOUT, "charge", 3),  # an attempt that never existed
        timer(TimerKind.TIMEOUT, "charge", 2, COMPENSATE),  # no compensation is running
        timer(TimerKind.RETRY, "refund", 1),  # a step the saga does not have
    ],
)
def test_a_stale_timer_does_nothing(stale: TimerFired) -> None:
    policy = RetryPolicy(max_attempts=3, initial_interval_seconds=2)
    run = Run(one_step(Step(name="charge", pool="payments", timeout_seconds=30, retry=policy)))
    run.start()
    run.send(fail("charge", 1))
    run.advance(2)
    run.send(timer(TimerKind.RETRY, "charge", 1))
    before = run.instance
    t = run.send(stale)
    assert t.history == ()
    assert t.dispatches == ()
    assert t.timers == ()
    assert t.instance == before


def test_a_timeout_timer_after_success_does_nothing() -> None:
    run = Run(one_step(Step(name="charge", pool="payments", timeout_seconds=30)))
    run.start()
    run.send(ok("charge"))
    run.advance(30)
    t = run.send(timer(TimerKind.TIMEOUT, "charge", 1))
    assert t.history == ()
    assert t.instance.status is SagaStatus.COMPLETED


def test_a_timeout_timer_during_retry_wait_does_nothing() -> None:
    policy = RetryPolicy(max_attempts=3, initial_interval_seconds=60)
    run = Run(one_step(Step(name="charge", pool="payments", timeout_seconds=30, retry=policy)))
    run.start()
    run.send(fail("charge"))
    run.advance(30)
    assert run.send(timer(TimerKind.TIMEOUT, "charge", 1)).history == ()
    assert run.step_status("charge") is StepStatus.RETRY_WAIT


# ---- stale and duplicate replies ----------------------------------------------------------------


def test_a_duplicate_reply_is_ignored_with_a_history_event() -> None:
    run = Run(three_steps())
    run.start()
    run.send(ok("reserve", result=1))
    before = run.instance
    run.advance(1)
    t = run.send(ok("reserve", result=2))
    assert t.dispatches == ()
    assert t.timers == ()
    assert len(t.history) == 1
    event = t.history[0]
    assert (event.type, event.step, event.phase, event.attempt) == (
        "reply_ignored",
        "reserve",
        FORWARD,
        1,
    )
    assert event.data == {"ok": True}
    assert event.seq == before.seq + 1
    assert t.instance.steps == before.steps
    assert t.instance.completed == before.completed
    assert t.instance.status is before.status
    assert t.instance.updated_at == NOW + timedelta(seconds=1)


@pytest.mark.parametrize(
    "reply",
    [
        fail("reserve", 1),  # the same failure again
        ok("reserve", 3),  # an attempt that was never sent
        ok("reserve", 2, COMPENSATE),  # no compensation is running
        ok("ship", 1),  # a step that has not started
        fail("ship", 0, COMPENSATE),  # nor has its compensation
    ],
)
def test_a_stale_reply_is_ignored(reply: StepReply) -> None:
    run = Run(three_steps())
    run.start()
    run.send(fail("reserve", 1))
    before = run.instance
    t = run.send(reply)
    assert types(t) == ["reply_ignored"]
    assert t.dispatches == ()
    assert t.timers == ()
    assert t.instance.steps == before.steps


@pytest.mark.parametrize(
    "stray",
    [
        ok("refund", 1),  # a step the saga does not have
        fail("refund", 1, COMPENSATE),
        ok("bill", 1, COMPENSATE),  # bill has no compensation
    ],
)
def test_a_stray_reply_is_ignored_without_a_pool(stray: StepReply) -> None:
    run = Run(three_steps())
    run.start()
    before = run.instance
    t = run.send(stray)
    assert types(t) == ["reply_ignored"]
    event = t.history[0]
    assert (event.step, event.phase, event.attempt) == (stray.step, stray.phase, 1)
    assert event.pool is None
    assert t.dispatches == ()
    assert t.instance.steps == before.steps


def test_a_failure_reply_during_retry_wait_is_ignored() -> None:
    run = Run(three_steps(reserve=RetryPolicy(max_attempts=2, initial_interval_seconds=1)))
    run.start()
    run.send(fail("reserve"))
    t = run.send(fail("reserve", 1))
    assert types(t) == ["reply_ignored"]
    assert run.step_status("reserve") is StepStatus.RETRY_WAIT


def test_a_success_of_an_earlier_attempt_decides_the_step() -> None:
    """Attempt 1 timed out and attempt 2 is out; attempt 1 then succeeds: its effect is real,
    so the step succeeded (attempt 2's reply will be ignored)."""
    run = Run(three_steps(reserve=RetryPolicy(max_attempts=3, initial_interval_seconds=0)))
    run.start()
    run.send(fail("reserve"))  # attempt 2 dispatched at once
    t = run.send(ok("reserve", 1))
    assert types(t)[:2] == ["step_succeeded", "step_dispatched"]
    assert run.step_status("reserve") is StepStatus.SUCCEEDED
    assert types(run.send(ok("reserve", 2))) == ["reply_ignored"]


def test_replies_after_the_saga_ended_are_ignored() -> None:
    run = Run(three_steps())
    run.start()
    run.send(ok("reserve"))
    run.send(fail("ship", retryable=False))
    run.send(ok("reserve", phase=COMPENSATE))
    assert run.status is SagaStatus.COMPENSATED
    for late in (ok("reserve", phase=COMPENSATE), fail("ship"), ok("ship"), ok("reserve")):
        t = run.send(late)
        assert types(t) == ["reply_ignored"]
        assert t.dispatches == ()
        assert run.status is SagaStatus.COMPENSATED


def test_history_events_name_the_pool_of_their_step_phase() -> None:
    run = Run(three_steps())
    run.start()
    run.send(ok("reserve"))
    run.send(ok("ship"))
    run.send(fail("bill", retryable=False))
    run.send(ok("ship", phase=COMPENSATE))
    run.send(ok("ship", phase=COMPENSATE))  # ignored
    pools: dict[tuple[str, str | None, Phase | None], str | None]
    pools = {(h.type, h.step, h.phase): h.pool for h in run.history}
    assert pools[("step_dispatched", "ship", FORWARD)] == "shipping"
    assert pools[("compensation_dispatched", "ship", COMPENSATE)] == "logistics"
    assert pools[("reply_ignored", "ship", COMPENSATE)] == "logistics"
    assert pools[("step_failed", "bill", FORWARD)] == "payments"
    assert pools[("saga_compensating", None, None)] is None


def test_a_second_start_changes_nothing() -> None:
    run = Run(three_steps())
    run.start()
    before = run.instance
    t = run.send(Start(input=None))
    assert t.history == ()
    assert t.dispatches == ()
    assert t.instance == before
    assert run.step_status("ship") is StepStatus.PENDING  # not run beside reserve


@pytest.mark.parametrize("state", ["compensating", "completed", "compensated"])
def test_start_on_a_later_instance_changes_nothing(state: str) -> None:
    run = Run(three_steps())
    run.start()
    run.send(ok("reserve"))
    if state == "completed":
        run.send(ok("ship"))
        run.send(ok("bill"))
    else:
        run.send(fail("ship", retryable=False))
        if state == "compensated":
            run.send(ok("reserve", phase=COMPENSATE))
    assert run.status.value == state
    t = run.send(Start(input=None))
    assert t.history == ()
    assert run.step_status("bill") in (StepStatus.PENDING, StepStatus.SUCCEEDED)


# ---- cancel and resume --------------------------------------------------------------------------


def test_cancel_waits_for_the_running_step_and_undoes_it_when_it_succeeds() -> None:
    run = Run(three_steps())
    run.start()
    run.send(ok("reserve"))
    t = run.send(Cancel(reason="customer changed their mind"))
    assert types(t) == ["saga_cancel_requested", "saga_compensating"]
    assert t.history[0].data == {"reason": "customer changed their mind"}
    assert t.dispatches == ()  # ship is still in flight
    assert t.instance.status is SagaStatus.COMPENSATING
    assert run.instance.failure == Failure(
        type="Cancelled", message="customer changed their mind", retryable=False
    )
    t = run.send(ok("ship"))
    assert types(t) == ["step_succeeded", "compensation_dispatched"]
    assert sent(t) == [("ship", COMPENSATE, 1)]  # never bill: no forward step after a cancel
    run.send(ok("ship", phase=COMPENSATE))
    run.send(ok("reserve", phase=COMPENSATE))
    assert run.status is SagaStatus.COMPENSATED
    assert run.step_status("bill") is StepStatus.PENDING
    assert [d.step for d in run.dispatches if d.phase is FORWARD] == ["reserve", "ship"]


def test_cancel_then_a_failed_attempt_is_not_retried() -> None:
    run = Run(three_steps())
    run.start()
    run.send(ok("reserve"))
    run.send(Cancel())
    t = run.send(fail("ship", retryable=True))
    assert types(t) == ["step_failed", "compensation_dispatched"]
    assert sent(t) == [("reserve", COMPENSATE, 1)]
    assert run.step_status("ship") is StepStatus.FAILED


def test_cancel_during_retry_wait_abandons_the_step() -> None:
    run = Run(three_steps(ship=RetryPolicy(max_attempts=3, initial_interval_seconds=10)))
    run.start()
    run.send(ok("reserve"))
    run.send(fail("ship"))
    assert run.step_status("ship") is StepStatus.RETRY_WAIT
    t = run.send(Cancel())
    assert types(t) == [
        "saga_cancel_requested",
        "saga_compensating",
        "step_failed",
        "compensation_dispatched",
    ]
    assert sent(t) == [("reserve", COMPENSATE, 1)]
    state = run.instance.steps["ship"]
    assert state.status is StepStatus.FAILED
    assert state.error is not None
    assert state.error.type == "Boom"  # how its last attempt ended
    step_failed = t.history[2]
    assert (step_failed.step, step_failed.attempt) == ("ship", 1)
    assert step_failed.data["failure"].type == "Abandoned"
    assert run.instance.failure is not None
    assert run.instance.failure.type == "Cancelled"
    run.advance(10)
    assert run.send(timer(TimerKind.RETRY, "ship", 1)).history == ()  # not tried again
    run.send(ok("reserve", phase=COMPENSATE))
    assert run.status is SagaStatus.COMPENSATED


@pytest.mark.parametrize("state", ["compensating", "completed", "compensated"])
def test_cancel_is_a_no_op_unless_running(state: str) -> None:
    run = Run(three_steps())
    run.start()
    run.send(ok("reserve"))
    if state == "completed":
        run.send(ok("ship"))
        run.send(ok("bill"))
    else:
        run.send(fail("ship", retryable=False))
        if state == "compensated":
            run.send(ok("reserve", phase=COMPENSATE))
    assert run.status.value == state
    t = run.send(Cancel())
    assert t.history == ()


def failing_compensation_run() -> Run:
    """a (compensation tried twice) -> b (compensated) -> c fails; a's compensation gives up."""
    run = Run(compensation_gives_up_saga())
    run.start()
    run.send(ok("a"))
    run.send(ok("b"))
    run.send(fail("c"))
    run.send(ok("b", phase=COMPENSATE))
    run.send(fail("a", 1, COMPENSATE))
    run.send(fail("a", 2, COMPENSATE))
    assert run.status is SagaStatus.FAILED
    return run


def test_resume_runs_the_failed_compensation_again_with_a_fresh_budget() -> None:
    run = failing_compensation_run()
    t = run.send(Resume())
    assert types(t) == ["saga_resumed", "saga_compensating", "compensation_dispatched"]
    assert sent(t) == [("a", COMPENSATE, 3)]
    assert run.status is SagaStatus.COMPENSATING
    assert types(run.send(fail("a", 2, COMPENSATE))) == ["reply_ignored"]  # from before
    t = run.send(fail("a", 3, COMPENSATE))
    assert sent(t) == [("a", COMPENSATE, 4)]  # the budget of two attempts restarted
    t = run.send(fail("a", 4, COMPENSATE))
    assert types(t) == ["compensation_failed", "saga_failed"]
    t = run.send(Resume())
    assert sent(t) == [("a", COMPENSATE, 5)]
    t = run.send(ok("a", 5, COMPENSATE))
    assert types(t) == ["compensation_succeeded", "saga_compensated"]
    assert run.step_status("a") is StepStatus.COMPENSATED
    assert run.step_status("b") is StepStatus.COMPENSATED
    assert [h.step for h in run.history if h.type == "compensation_succeeded"] == ["b", "a"]


@pytest.mark.parametrize("state", ["running", "compensating", "completed", "compensated"])
def test_resume_is_a_no_op_unless_failed(state: str) -> None:
    run = Run(three_steps())
    run.start()
    if state != "running":
        run.send(ok("reserve"))
    if state == "completed":
        run.send(ok("ship"))
        run.send(ok("bill"))
    elif state in ("compensating", "compensated"):
        run.send(fail("ship", retryable=False))
        if state == "compensated":
            run.send(ok("reserve", phase=COMPENSATE))
    assert run.status.value == state
    assert run.send(Resume()).history == ()


# ---- property-based -----------------------------------------------------------------------------

Outcome = Literal["ok", "retryable", "business"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "retryable", "business")
# Success is likelier, so that long sagas get far enough to have something to compensate.
WEIGHTED_OUTCOMES: tuple[Outcome, ...] = ("ok", "ok", "ok", "ok", "retryable", "business")
MAX_DUPLICATES = 8
MAX_DEAD_LETTERS = 2
MAX_RESUMES = 2
BUSY = (
    StepStatus.RUNNING,
    StepStatus.RETRY_WAIT,
    StepStatus.COMPENSATING,
    StepStatus.COMPENSATION_RETRY_WAIT,
)
UNKNOWN_OUTCOME = ("StepTimeout", "DeadLettered")
"""Failures that say nothing about whether the attempt ran: it may still succeed, late."""


@st.composite
def retry_policies(draw: st.DrawFn) -> RetryPolicy:
    initial = draw(st.sampled_from([0.0, 1.0, 2.5]))
    return RetryPolicy(max_attempts=draw(st.integers(1, 3)), initial_interval_seconds=initial)


@st.composite
def sagas(draw: st.DrawFn) -> Saga:
    """1-6 steps; retries with or without delays."""
    count = draw(st.integers(1, 6))
    steps: list[Step] = []
    for i in range(count):
        compensation = None
        if draw(st.booleans()):
            compensation = Compensation(
                command=f"undo_{i}",
                pool=draw(st.sampled_from([None, "undo"])),
                retry=draw(retry_policies()),
                timeout_seconds=draw(st.sampled_from([None, 10.0])),
            )
        steps.append(
            Step(
                name=f"s{i}",
                pool=draw(st.sampled_from(["p0", "p1"])),
                compensation=compensation,
                retry=draw(retry_policies()),
                timeout_seconds=draw(st.sampled_from([None, None, 10.0])),
            )
        )
    return Saga(name="random", version=1, steps=tuple(steps))


def event_bound(definition: Saga) -> int:
    """Events a complete run can need: per attempt a reply, a dead letter, a timeout and a
    retry timer (a late reply is its attempt's reply)."""
    forward = sum(4 * s.retry.max_attempts for s in definition.steps)
    undo = [4 * s.compensation.retry.max_attempts for s in definition.steps if s.compensation]
    per_resume = 1 + max(undo, default=0)
    return 1 + forward + sum(undo) + MAX_DUPLICATES + 1 + MAX_RESUMES * per_resume


Effect = Literal["decides", "late", "ignored"]


def has_compensation(definition: Saga, name: str) -> bool:
    return definition.step(name).compensation is not None


def reply_effect(instance: InstanceState, reply: StepReply) -> Effect:
    """What a reply does to `instance`, by the engine's rules:

    - a compensation reply decides only the compensation attempt in flight;
    - a forward failure decides only the attempt in flight (RUNNING, the current attempt);
    - a forward success decides its step while the step waits (RUNNING or RETRY_WAIT) and the
      attempt is one sent so far: an earlier attempt we stopped waiting for may still finish;
    - a forward success of a FAILED step is a late success when we never heard that attempt's
      outcome: an earlier attempt, or the current one if it failed by timeout or dead letter;
    - anything else (a duplicate, a stale or contradicting reply) is ignored."""
    state = instance.steps.get(reply.step)
    if state is None:
        return "ignored"
    if reply.phase is COMPENSATE:
        in_flight = state.status is StepStatus.COMPENSATING
        return "decides" if in_flight and reply.attempt == state.compensation_attempt else "ignored"
    if not reply.ok:
        in_flight = state.status is StepStatus.RUNNING and reply.attempt == state.attempt
        return "decides" if in_flight else "ignored"
    sent_so_far = 1 <= reply.attempt <= state.attempt
    if state.status in (StepStatus.RUNNING, StepStatus.RETRY_WAIT) and sent_so_far:
        return "decides"
    unheard = reply.attempt < state.attempt or (
        state.error is not None and state.error.type in UNKNOWN_OUTCOME
    )
    if state.status is StepStatus.FAILED and sent_so_far and unheard:
        return "late"
    return "ignored"


def check_reply(definition: Saga, before: InstanceState, reply: StepReply, t: Transition) -> Effect:
    """`t` is what `reply` did to `before`: check it against `reply_effect`."""
    effect = reply_effect(before, reply)
    after, kinds = t.instance, types(t)
    if effect == "ignored":
        assert kinds == ["reply_ignored"]
        assert t.dispatches == ()
        assert t.timers == ()
        assert after.steps == before.steps
        assert after.status is before.status
        assert after.completed == before.completed
        assert after.failure == before.failure
        return effect
    first = t.history[0]
    assert (first.step, first.phase, first.attempt) == (reply.step, reply.phase, reply.attempt)
    assert after.failure == before.failure or before.failure is None  # the first cause stays
    if reply.phase is COMPENSATE:
        decided = "compensation_succeeded" if reply.ok else "attempt_failed compensation_failed"
        assert first.type in decided.split()
        return effect
    if not reply.ok:
        assert first.type in ("attempt_failed", "step_failed")
        return effect
    # a success: the step joins `completed`, with this attempt's result
    assert first.type == ("step_succeeded" if effect == "decides" else "step_succeeded_late")
    assert after.completed == (*before.completed, reply.step)
    assert after.steps[reply.step].result == reply.result
    if effect == "decides":
        return effect
    # a late success: a step fails for good only once the saga stopped running forward
    assert before.status in (SagaStatus.COMPENSATING, SagaStatus.COMPENSATED, SagaStatus.FAILED)
    assert after.failure == before.failure
    others = {n: s for n, s in after.steps.items() if n != reply.step}
    assert others == {n: s for n, s in before.steps.items() if n != reply.step}
    reopens = before.status is SagaStatus.COMPENSATED
    if reopens and has_compensation(definition, reply.step):  # undo it: the saga reopens
        assert kinds == ["step_succeeded_late", "saga_compensating", "compensation_dispatched"]
        assert sent(t) == [(reply.step, COMPENSATE, 1)]
        assert after.status is SagaStatus.COMPENSATING
        assert after.steps[reply.step].status is StepStatus.COMPENSATING
    else:  # nothing to undo; or undone in its turn, after the compensation in flight (a
        # compensating saga always has one) or after an operator's resume (a failed saga)
        assert kinds == ["step_succeeded_late"]
        assert t.dispatches == ()
        assert after.status is before.status
        assert after.steps[reply.step].status is StepStatus.SUCCEEDED
    return effect


@dataclass
class Sim:
    """A random schedule: replies to outstanding dispatches (even after the end), duplicates,
    dead letters, timers, operators."""

    definition: Saga
    run: Run
    outstanding: list[Dispatch] = field(default_factory=list)
    timers: list[ScheduleTimer] = field(default_factory=list)
    replies: list[StepReply] = field(default_factory=list)
    effects: set[str] = field(default_factory=set)
    """Steps a worker reported a success for: their effect is real."""
    dead_lettered: list[Dispatch] = field(default_factory=list)
    duplicates: int = 0
    resumes: int = 0
    cancelled: bool = False
    events: int = 0
    compensation_began_at: int | None = None

    def apply(self, event: Event) -> Transition:
        self.events += 1
        before = self.run.instance
        t = self.run.send(event)
        for h in t.history:
            if h.type == "saga_compensating" and self.compensation_began_at is None:
                self.compensation_began_at = h.seq
        if self.compensation_began_at is not None:  # no forward command once undoing began
            assert all(
                d.phase is COMPENSATE for d in t.dispatches if d.seq > self.compensation_began_at
            )
        if before.status is not SagaStatus.RUNNING:
            assert all(d.phase is COMPENSATE for d in t.dispatches)
        if self.run.status.terminal:
            assert t.dispatches == ()
            assert t.timers == ()
        busy = [n for n, state in self.run.instance.steps.items() if state.status in BUSY]
        assert len(busy) <= 1  # a straight line does one thing at a time
        if self.run.status in (SagaStatus.RUNNING, SagaStatus.COMPENSATING):
            assert len(busy) == 1  # ... and, until it ends, always something
        self.outstanding.extend(t.dispatches)
        self.timers.extend(t.timers)
        return t

    def reply(self, reply: StepReply) -> Effect:
        self.replies.append(reply)
        before = self.run.instance
        return check_reply(self.definition, before, reply, self.apply(reply))

    def answer(self, dispatch: Dispatch, outcome: Outcome) -> None:
        if outcome == "ok":
            reply = ok(
                dispatch.step, dispatch.attempt, dispatch.phase, result={"seq": dispatch.seq}
            )
            if dispatch.phase is FORWARD:
                self.effects.add(dispatch.step)
        else:
            reply = fail(
                dispatch.step, dispatch.attempt, dispatch.phase, retryable=outcome == "retryable"
            )
        self.reply(reply)

    def dead_letter(self, dispatch: Dispatch) -> None:
        """The command was dead-lettered: the shell fails its attempt (non-retryable
        DeadLettered). A replay may still run it, so it stays outstanding."""
        self.dead_lettered.append(dispatch)
        step, attempt, phase = dispatch.step, dispatch.attempt, dispatch.phase
        self.reply(fail(step, attempt, phase, retryable=False, type="DeadLettered"))

    def duplicate(self, reply: StepReply) -> None:
        """A reply that was applied already, again: it changes nothing."""
        self.duplicates += 1
        before = self.run.instance
        t = self.apply(reply)
        assert check_reply(self.definition, before, reply, t) == "ignored"

    def fire(self, scheduled: ScheduleTimer) -> None:
        self.run.now = max(self.run.now, scheduled.due_at)
        self.apply(
            TimerFired(
                kind=scheduled.kind,
                step=scheduled.step,
                phase=scheduled.phase,
                attempt=scheduled.attempt,
            )
        )

    def cancel(self) -> None:
        self.cancelled = True
        self.apply(Cancel(reason="random"))

    def resume(self) -> None:
        self.resumes += 1
        t = self.apply(Resume())
        assert types(t)[:2] == ["saga_resumed", "saga_compensating"]
        assert len(t.dispatches) == 1


def drive(definition: Saga, data: st.DataObject) -> Sim:
    sim = Sim(definition, Run(definition, {"n": 1}))
    sim.apply(Start(input={"n": 1}))
    bound = event_bound(definition)
    # half the runs may see an operator's cancel, at a random point
    may_cancel = data.draw(st.booleans(), label="may cancel")
    while True:
        assert sim.events <= bound, "the saga did not finish within the bound"
        status = sim.run.status
        resumable = status is SagaStatus.FAILED and sim.resumes < MAX_RESUMES
        if resumable and data.draw(st.booleans(), label="resume"):
            sim.resume()
            continue
        choices: list[str] = []
        if status.terminal:
            # replies still in flight may arrive after the end: a late success may reopen it
            if not sim.outstanding or data.draw(st.booleans(), label="stop"):
                break
            choices.append("answer")
        else:
            if sim.outstanding:
                choices.append("answer")
            if sim.timers:
                choices.append("timer")
            assert choices, "the saga is stuck with nothing to wait for"
            if sim.replies and sim.duplicates < MAX_DUPLICATES:
                choices.append("duplicate")
            if may_cancel and not sim.cancelled:
                # likelier while a step waits to retry: the cancel then abandons it
                waiting = StepStatus.RETRY_WAIT in [
                    s.status for s in sim.run.instance.steps.values()
                ]
                if waiting or data.draw(st.integers(0, 3), label="cancel?") == 0:
                    choices.append("cancel")
            dead_letterable = [d for d in sim.outstanding if d not in sim.dead_lettered]
            rare = len(sim.dead_lettered) < MAX_DEAD_LETTERS
            if dead_letterable and rare and data.draw(st.integers(0, 9), label="dead?") == 0:
                choices.append("dead letter")
        action = data.draw(st.sampled_from(choices), label="action")
        if action == "answer":
            index = data.draw(st.integers(0, len(sim.outstanding) - 1), label="dispatch")
            outcome = data.draw(st.sampled_from(WEIGHTED_OUTCOMES), label="outcome")
            sim.answer(sim.outstanding.pop(index), outcome)
        elif action == "timer":
            index = data.draw(st.integers(0, len(sim.timers) - 1), label="timer")
            sim.fire(sim.timers.pop(index))
        elif action == "cancel":
            sim.cancel()
        elif action == "duplicate":
            index = data.draw(st.integers(0, len(sim.replies) - 1), label="duplicate of")
            sim.duplicate(sim.replies[index])
        else:
            index = data.draw(st.integers(0, len(dead_letterable) - 1), label="dead letter")
            sim.dead_letter(dead_letterable[index])
    return sim


PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def check_final_state(sim: Sim) -> None:
    definition, run = sim.definition, sim.run
    instance, history = run.instance, run.history
    names = [s.name for s in definition.steps]

    def compensable(name: str) -> bool:
        return has_compensation(definition, name)

    # seq strictly increases by one per history event, from 1
    assert [h.seq for h in history] == list(range(1, len(history) + 1))
    assert instance.seq == len(history)
    # each dispatch points at its own history event
    by_seq = {h.seq: h for h in history}
    for d in run.dispatches:
        event = by_seq[d.seq]
        assert (event.step, event.phase, event.attempt) == (d.step, d.phase, d.attempt)

    # steps succeed in definition order, and `completed` records exactly that order; only the
    # step that failed can succeed late, so a late success keeps that order too
    successes = [h for h in history if h.type in ("step_succeeded", "step_succeeded_late")]
    succeeded: list[str] = []
    for h in successes:  # the result is the one of the attempt that decided the step
        assert h.step is not None
        assert instance.steps[h.step].result == h.data["result"]
        succeeded.append(h.step)
    assert list(instance.completed) == succeeded
    assert succeeded == names[: len(succeeded)]
    # a worker's success is never lost: exactly the steps it reported a success for succeeded
    assert set(succeeded) == sim.effects
    late = [h for h in history if h.type == "step_succeeded_late"]
    assert len(late) <= 1
    if late:
        assert late[0].step == succeeded[-1]
        assert sim.compensation_began_at is not None
        assert sim.compensation_began_at < late[0].seq
        failed_before = [h for h in history if h.type == "step_failed" and h.seq < late[0].seq]
        assert [h.step for h in failed_before] == [late[0].step]
    # forward attempts of a step are numbered 1, 2, ... and never exceed the policy
    for name in names:
        attempts = [d.attempt for d in run.dispatches if d.step == name and d.phase is FORWARD]
        assert attempts == list(range(1, len(attempts) + 1))
        assert len(attempts) <= definition.step(name).retry.max_attempts
    # a step that failed for good says so in the history (a cancel during a retry wait too,
    # as Abandoned); the step keeps how its last attempt ended
    failed = [n for n in names if instance.steps[n].status is StepStatus.FAILED]
    assert len(failed) <= 1
    for name in failed:
        state = instance.steps[name]
        own = [h for h in history if h.step == name and h.type != "reply_ignored"]
        last = own[-1]
        assert last.type == "step_failed"
        assert last.attempt == state.attempt
        if last.data["failure"].type == "Abandoned":
            assert own[-2].type == "attempt_failed"
            assert (own[-2].attempt, own[-2].data["failure"]) == (state.attempt, state.error)
        else:
            assert last.data["failure"] == state.error
        assert names.index(name) == len(instance.completed)

    # the saga left the happy path once; its first cause stays
    compensating = [h for h in history if h.type == "saga_compensating"]
    if instance.status is not SagaStatus.COMPLETED:
        first = compensating[0]
        assert first.seq == sim.compensation_began_at
        assert instance.failure is not None
        assert instance.failure == first.data["failure"]
        cause = history[first.seq - 2]  # the event just before
        if instance.failure.type == "Cancelled":
            assert sim.cancelled
            assert cause.type == "saga_cancel_requested"
        else:
            assert cause.type == "step_failed"
            assert cause.data["failure"] == instance.failure
        # a reopen or a resume gives no new cause
        assert all("failure" not in h.data for h in compensating[1:])

    compensations = [d for d in run.dispatches if d.phase is COMPENSATE]
    first_undo: dict[str, int] = {}  # step -> seq of its first compensation dispatch
    for d in compensations:
        first_undo.setdefault(d.step, d.seq)
    undone_order = list(first_undo)
    # newest first; a late success is undone next, after what was undone before it arrived
    expected_order = [n for n in reversed(instance.completed) if compensable(n)]
    if late and compensable(succeeded[-1]):
        older = expected_order[1:]
        before_late = [n for n in undone_order if first_undo[n] < late[0].seq]
        assert before_late == older[: len(before_late)]
        expected_order = [*before_late, succeeded[-1], *older[len(before_late) :]]
    compensated = [h.step for h in history if h.type == "compensation_succeeded"]

    if instance.status is SagaStatus.COMPLETED:
        assert all(instance.steps[n].status is StepStatus.SUCCEEDED for n in names)
        assert instance.completed == tuple(names)
        assert compensations == []
        assert sim.compensation_began_at is None
        assert compensating == []
        assert instance.failure is None
    elif instance.status is SagaStatus.COMPENSATED:
        assert undone_order == expected_order
        assert compensated == expected_order  # each compensated exactly once
        if not failed and not late:  # nothing failed: a cancel stopped it
            assert sim.cancelled
            assert "saga_cancel_requested" in [h.type for h in history]
        for n in names:
            status = instance.steps[n].status
            if n in instance.completed:  # every effect is undone (if it can be)
                expected = StepStatus.COMPENSATED if compensable(n) else StepStatus.SUCCEEDED
                assert status is expected
            elif n not in failed:
                assert status is StepStatus.PENDING
    else:
        assert instance.status is SagaStatus.FAILED
        broken = [n for n in names if instance.steps[n].status is StepStatus.COMPENSATION_FAILED]
        assert len(broken) == 1
        assert undone_order == expected_order[: len(undone_order)]
        assert undone_order[-1] == broken[0]
        assert compensated == undone_order[:-1]
        for n in instance.completed:  # the rest, a late success too, waits for a resume
            if n in compensated:
                assert instance.steps[n].status is StepStatus.COMPENSATED
            elif n != broken[0]:
                assert instance.steps[n].status is StepStatus.SUCCEEDED
        error = instance.steps[broken[0]].compensation_error
        assert error is not None
        assert [h for h in history if h.type == "saga_failed"][-1].data["failure"] == error


@PROPERTY_SETTINGS
@given(definition=sagas(), data=st.data())
def test_random_schedules_always_end_in_a_consistent_terminal_state(
    definition: Saga, data: st.DataObject
) -> None:
    sim = drive(definition, data)
    check_final_state(sim)

    run = sim.run
    final = run.instance
    # true duplicates: every reply was applied once already; again, it changes nothing
    for reply in sim.replies:
        before = run.instance
        assert check_reply(definition, before, reply, run.send(reply)) == "ignored"
    # replies still in flight, each on its own: nothing is left for one to decide; a success
    # may be a late success, which reopens the saga only to undo a compensable step
    for d in sim.outstanding:
        for reply in (
            ok(d.step, d.attempt, d.phase, result={"seq": d.seq}),
            fail(d.step, d.attempt, d.phase),
        ):
            t = decide(definition, run.instance, reply, run.now)
            check_transition(run.instance, t)
            effect = check_reply(definition, run.instance, reply, t)
            assert effect != "decides"
            reopens = effect == "late" and has_compensation(definition, reply.step)
            reopens = reopens and final.status is SagaStatus.COMPENSATED
            expected = SagaStatus.COMPENSATING if reopens else final.status
            assert t.instance.status is expected
    # timers still due, a cancel: nothing
    for scheduled in sim.timers:
        fired = TimerFired(
            kind=scheduled.kind,
            step=scheduled.step,
            phase=scheduled.phase,
            attempt=scheduled.attempt,
        )
        assert run.send(fired).history == ()
    assert run.send(Cancel()).history == ()
    assert run.instance.steps == final.steps
    assert run.instance.status is final.status
    assert run.instance.completed == final.completed
    assert run.instance.failure == final.failure


@st.composite
def arbitrary_events(draw: st.DrawFn, definition: Saga) -> Event:
    """Well-formed events in any order: replies and timers naming any step (even one the saga
    lacks), any phase (even a compensation that does not exist) and any attempt; cancel;
    resume; Start again."""
    kind = draw(st.sampled_from(["reply", "reply", "reply", "timer", "cancel", "resume", "start"]))
    if kind == "cancel":
        return Cancel()
    if kind == "resume":
        return Resume()
    if kind == "start":
        return Start(input=None)
    # mostly steps that can answer in that phase; sometimes strays
    sensible = [(s.name, FORWARD) for s in definition.steps]
    sensible += [(s.name, COMPENSATE) for s in definition.steps if s.compensation is not None]
    strays = [
        (name, phase)
        for name in [*(s.name for s in definition.steps), "unknown"]
        for phase in Phase
    ]
    step, phase = draw(st.sampled_from(sensible) | st.sampled_from(strays))
    attempt = draw(st.integers(0, 4))
    if kind == "timer":
        timer_kind = draw(st.sampled_from(list(TimerKind)))
        return TimerFired(kind=timer_kind, step=step, phase=phase, attempt=attempt)
    outcome = draw(st.sampled_from(OUTCOMES))
    if outcome == "ok":
        return ok(step, attempt, phase)
    return fail(step, attempt, phase, retryable=outcome == "retryable")


@PROPERTY_SETTINGS
@given(definition=sagas(), data=st.data())
def test_arbitrary_events_keep_the_invariants(definition: Saga, data: st.DataObject) -> None:
    """Forged, out-of-order events never crash decide, break seq, or revive a finished saga."""
    run = Run(definition)
    run.start()
    events = data.draw(st.lists(arbitrary_events(definition), max_size=40), label="events")
    compensating_since: int | None = None
    for event in events:
        before = run.instance
        t = run.send(event)  # checks seq and dispatch invariants
        after = t.instance
        if isinstance(event, TimerFired) and event.kind is TimerKind.DEADLINE:
            # the saga's own timer (it names no step): it stops a running saga that has a
            # deadline, nothing else (a stray one, for a saga without a deadline, is ignored)
            if before.status is SagaStatus.RUNNING and definition.deadline_seconds is not None:
                assert types(t)[:2] == ["saga_deadline_exceeded", "saga_compensating"]
            else:
                assert t.history == ()
        elif isinstance(event, TimerFired) and event.step == "unknown":
            assert t.history == ()
        if isinstance(event, Start):  # the run has started already
            assert t.history == ()
        if isinstance(event, StepReply) and event.step == "unknown":
            assert types(t) == ["reply_ignored"]
        effect = check_reply(definition, before, event, t) if isinstance(event, StepReply) else None
        late = effect == "late"  # its effect is real: undo it
        if before.status is SagaStatus.COMPLETED or (
            before.status is SagaStatus.COMPENSATED and not late
        ):
            assert after.status is before.status
            assert after.steps == before.steps
            assert t.dispatches == ()
        elif before.status is SagaStatus.FAILED and not isinstance(event, Resume):
            assert after.status is SagaStatus.FAILED  # a late success waits for a resume
            assert t.dispatches == ()
            if not late:
                assert after.steps == before.steps
        elif before.status is not SagaStatus.RUNNING:
            assert after.status is not SagaStatus.RUNNING
            assert after.status is not SagaStatus.COMPLETED
        for h in t.history:
            if h.type == "saga_compensating" and compensating_since is None:
                compensating_since = h.seq
        if compensating_since is not None:
            assert all(d.phase is COMPENSATE for d in t.dispatches if d.seq > compensating_since)
        if after.status is SagaStatus.COMPLETED:
            assert all(state.status is StepStatus.SUCCEEDED for state in after.steps.values())
        busy = [n for n, state in after.steps.items() if state.status in BUSY]
        assert len(busy) <= 1  # a straight line does one thing at a time
        assert list(after.completed) == [s.name for s in definition.steps][: len(after.completed)]


@settings(PROPERTY_SETTINGS, max_examples=100)
@given(definition=sagas(), failing=st.integers(0, 5))
def test_business_failure_at_any_step_undoes_exactly_the_compensable_completed_steps(
    definition: Saga, failing: int
) -> None:
    names = [s.name for s in definition.steps]
    failing = min(failing, len(names) - 1)
    run = Run(definition)
    run.start()
    for name in names[:failing]:
        run.send(ok(name))
    t = run.send(fail(names[failing], retryable=False))
    undone: list[str] = []
    while t.dispatches:
        assert len(undone) < len(names), "compensation does not end"
        (d,) = t.dispatches
        undone.append(d.step)
        t = run.send(ok(d.step, d.attempt, COMPENSATE))
    expected = [n for n in reversed(names[:failing]) if definition.step(n).compensation is not None]
    assert undone == expected
    assert run.status is SagaStatus.COMPENSATED
