"""The engine's attempt timeouts, and timers that arrive too late to matter."""

from __future__ import annotations

import pytest

from orchestrator.definitions import RetryPolicy, Step
from orchestrator.engine import (
    Failure,
    SagaStatus,
    StepStatus,
    TimerFired,
    TimerKind,
)
from tests.support.engine import (
    COMPENSATE,
    FORWARD,
    NO_DELAY,
    ONCE,
    Run,
    fail,
    ok,
    one_step,
    scheduled,
    sent,
    timer,
    types,
)


def test_timeout_of_the_running_attempt_counts_as_a_failed_retryable_attempt() -> None:
    definition = one_step(Step(name="charge", pool="payments", timeout_seconds=30, retry=NO_DELAY))
    run = Run(definition)
    t = run.start()
    assert t.timers == (scheduled(TimerKind.TIMEOUT, "charge", 1, after=30),)
    run.advance(30)
    t = run.send(timer(TimerKind.TIMEOUT, "charge", 1))
    assert types(t) == ["attempt_timed_out", "attempt_failed", "step_dispatched"]
    failure = t.history[1].data["failure"]
    assert failure == Failure(
        type="StepTimeout", message="attempt 1 did not reply in time", retryable=True
    )
    assert sent(t) == [("charge", FORWARD, 2)]
    assert t.timers == (scheduled(TimerKind.TIMEOUT, "charge", 2, after=60),)
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
