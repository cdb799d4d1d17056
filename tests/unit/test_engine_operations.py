"""The engine on what operators ask: cancel, and resume a failed instance."""

from __future__ import annotations

import pytest

from orchestrator.definitions import RetryPolicy
from orchestrator.engine import (
    Cancel,
    Failure,
    Resume,
    SagaStatus,
    StepStatus,
    TimerKind,
)
from tests.support.engine import (
    COMPENSATE,
    FORWARD,
    Run,
    compensation_gives_up_saga,
    fail,
    ok,
    sent,
    three_steps,
    three_steps_in,
    timer,
    types,
)


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
    run = three_steps_in(state)
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
    run = three_steps_in(state)
    assert run.send(Resume()).history == ()
