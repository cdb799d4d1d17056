"""The engine's compensation: a failure undoes the completed steps, newest first."""

from __future__ import annotations

import pytest

from orchestrator.definitions import Compensation, RetryPolicy, Saga, Step
from orchestrator.engine import (
    Failure,
    SagaStatus,
    StepReply,
    StepStatus,
    TimerKind,
    Transition,
)
from tests.support.engine import (
    COMPENSATE,
    FORWARD,
    ONCE,
    Run,
    compensation_gives_up_saga,
    fail,
    ok,
    scheduled,
    sent,
    three_steps,
    timer,
    types,
)


def b_fails_after_a(comp: Compensation) -> tuple[Run, Transition]:
    """a, undone by `comp`, succeeds; then b fails at its only attempt, which starts a's
    compensation: the run, and the transition of b's failure."""
    definition = Saga(
        name="s",
        version=1,
        steps=(Step(name="a", pool="p", compensation=comp), Step(name="b", pool="p", retry=ONCE)),
    )
    run = Run(definition)
    run.start()
    run.send(ok("a"))
    return run, run.send(fail("b"))


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
    run, _ = b_fails_after_a(comp)
    t = run.send(fail("a", phase=COMPENSATE, type="Gone"))
    assert types(t) == ["compensation_failed", "saga_failed"]
    assert run.status is SagaStatus.FAILED


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
    run, _ = b_fails_after_a(comp)
    t = run.send(fail("a", phase=COMPENSATE))
    assert t.dispatches == ()
    assert t.timers == (scheduled(TimerKind.RETRY, "a", 1, after=7, phase=COMPENSATE),)
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
    run, t = b_fails_after_a(comp)
    assert t.timers == (scheduled(TimerKind.TIMEOUT, "a", 1, after=5, phase=COMPENSATE),)
    run.advance(5)
    t = run.send(timer(TimerKind.TIMEOUT, "a", 1, COMPENSATE))
    assert types(t) == ["attempt_timed_out", "attempt_failed", "compensation_dispatched"]
    run.advance(5)
    t = run.send(timer(TimerKind.TIMEOUT, "a", 2, COMPENSATE))
    assert types(t) == ["attempt_timed_out", "compensation_failed", "saga_failed"]
    assert run.instance.steps["a"].compensation_error == Failure(
        type="StepTimeout", message="attempt 2 did not reply in time", retryable=True
    )
