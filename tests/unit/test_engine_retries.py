"""The engine's retry rules, and steps that succeed after we gave up on them."""

from __future__ import annotations

from datetime import timedelta

from orchestrator.definitions import Compensation, RetryPolicy, Saga, Step
from orchestrator.engine import (
    Cancel,
    Resume,
    SagaStatus,
    ScheduleTimer,
    StepStatus,
    TimerKind,
)
from tests.support.engine import (
    COMPENSATE,
    FORWARD,
    NOW,
    ONCE,
    Run,
    fail,
    ok,
    one_step,
    sent,
    three_steps,
    timer,
    types,
    undo_a_then,
)


def test_retry_with_zero_delay_dispatches_the_next_attempt_at_once() -> None:
    run = Run(three_steps())
    run.start()
    run.advance(3)
    t = run.send(fail("reserve"))
    assert types(t) == ["attempt_failed", "step_dispatched"]
    assert t.history[0].data["retry_in_seconds"] == 0.0
    assert sent(t) == [("reserve", FORWARD, 2)]
    assert t.dispatches[0].seq == 4
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


def timing_out(name: str, retry: RetryPolicy) -> Step:
    """A step with a compensation whose attempts time out after 5 s."""
    compensation = Compensation(command=f"undo_{name}")
    return Step(name=name, pool="p", retry=retry, timeout_seconds=5, compensation=compensation)


def b_timing_out(retry: RetryPolicy) -> Run:
    """a succeeded; b (5 s timeout, `retry`) has run its first attempt out: its timer is due."""
    definition = undo_a_then(timing_out("b", retry))
    run = Run(definition)
    run.start()
    run.send(ok("a"))
    run.advance(5)
    return run


def test_a_late_success_after_the_last_timeout_is_compensated() -> None:
    """The last attempt timed out, the saga compensated, then the worker's success arrives:
    the effect is real, so the instance reopens and undoes it."""
    run = b_timing_out(ONCE)
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
            timing_out("c", ONCE),
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
    run = b_timing_out(RetryPolicy(max_attempts=2, initial_interval_seconds=1))
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
