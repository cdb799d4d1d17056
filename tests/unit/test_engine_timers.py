"""The four timer kinds in the pure engine: delayed steps, attempt timeouts, retries (their
jitter and time budget) and saga deadlines, and timers that arrive too late to matter."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.definitions import Compensation, RetryPolicy, Saga, Step
from orchestrator.engine import Cancel, Failure, SagaStatus, StepStatus, TimerFired, TimerKind
from orchestrator.errors import DefinitionError
from tests.support.engine import (
    COMPENSATE,
    FORWARD,
    INSTANCE_ID,
    NO_DELAY,
    NOW,
    ONCE,
    Run,
    fail,
    ok,
    one_step,
    scheduled,
    sent,
    timer,
    types,
    undo_a_then,
)

DELAYED = Saga(
    name="delayed",
    version=1,
    steps=[
        Step(name="order", pool="p", compensation=Compensation(command="unorder")),
        Step(name="remind", pool="p", delay_seconds=3600),
    ],
)


def test_a_delayed_step_waits_for_its_timer() -> None:
    run = Run(DELAYED)
    run.start()
    run.advance(1)
    t = run.send(ok("order"))

    assert types(t) == ["step_succeeded", "step_scheduled"]
    assert t.dispatches == ()
    assert run.step_status("remind") is StepStatus.SCHEDULED
    assert t.timers == (scheduled(TimerKind.DELAY, "remind", 1, after=3601),)

    run.advance(3600)
    fired = run.send(timer(TimerKind.DELAY, "remind", 1))
    assert sent(fired) == [("remind", FORWARD, 1)]
    again = run.send(timer(TimerKind.DELAY, "remind", 1))
    assert again.history == ()  # a timer fires once; a copy changes nothing


def test_cancel_while_a_step_waits_for_its_delay_starts_nothing() -> None:
    run = Run(DELAYED)
    run.start()
    run.send(ok("order"))
    t = run.send(Cancel(reason="changed my mind"))

    assert run.step_status("remind") is StepStatus.PENDING
    assert sent(t) == [("order", COMPENSATE, 1)]
    late = run.send(timer(TimerKind.DELAY, "remind", 1))
    assert late.dispatches == ()


DEADLINED = undo_a_then(deadline_seconds=60)


def test_the_deadline_compensates_a_saga_still_running() -> None:
    run = Run(DEADLINED)
    t = run.start()
    assert [(x.kind, x.due_at) for x in t.timers] == [
        (TimerKind.DEADLINE, NOW + timedelta(seconds=60))
    ]
    run.send(ok("a"))
    run.advance(60)

    t = run.send(timer(TimerKind.DEADLINE, "", 0))

    assert types(t)[:2] == ["saga_deadline_exceeded", "saga_compensating"]
    assert t.instance.failure is not None
    assert t.instance.failure.type == "DeadlineExceeded"
    # b is in flight: it is waited for; a is undone once b has answered
    assert t.dispatches == ()
    t = run.send(ok("b"))
    assert sent(t) == [("a", COMPENSATE, 1)]


def test_the_deadline_of_a_finished_saga_does_nothing() -> None:
    run = Run(DEADLINED)
    run.start()
    run.send(ok("a"))
    run.send(ok("b"))
    assert run.status is SagaStatus.COMPLETED
    run.advance(60)

    fired = run.send(timer(TimerKind.DEADLINE, "", 0))

    assert fired.history == ()


def test_jitter_spreads_delays_within_bounds_and_is_deterministic() -> None:
    policy = RetryPolicy(
        max_attempts=10, initial_interval_seconds=10, backoff_coefficient=1, jitter=0.2
    )

    delays = [policy.delay_before(2, salt=f"instance-{n}") for n in range(200)]

    assert all(8.0 <= d <= 12.0 for d in delays)  # within 20% either way
    assert len({round(d, 6) for d in delays}) > 150  # really spread
    assert policy.delay_before(2, salt="x") == policy.delay_before(2, salt="x")
    assert (
        RetryPolicy(initial_interval_seconds=10).delay_before(2, salt="x") == 10.0
    )  # off by default


def test_jittered_retries_use_the_instance_as_salt() -> None:
    saga = Saga(
        name="jittery",
        version=1,
        steps=[
            Step(name="a", pool="p", retry=RetryPolicy(initial_interval_seconds=10, jitter=0.5))
        ],
    )
    run = Run(saga)
    run.start()
    reply = fail("a")

    t = run.send(reply)

    expected = saga.tasks[0].retry.delay_before(2, salt=f"{INSTANCE_ID}:a:forward")
    assert t.timers == (scheduled(TimerKind.RETRY, "a", 1, after=expected),)
    # the last attempt's error is kept while waiting
    assert run.instance.steps["a"].error == reply.failure


@pytest.mark.parametrize(
    "build",
    [
        lambda: RetryPolicy(jitter=1.5)._check("x"),
        lambda: Saga(name="s", version=1, steps=[Step(name="a", pool="p", delay_seconds=0)]),
        lambda: Saga(name="s", version=1, deadline_seconds=-1, steps=[Step(name="a", pool="p")]),
    ],
)
def test_bad_timing_values_are_refused(build: object) -> None:
    assert callable(build)
    with pytest.raises(DefinitionError):
        build()


BUDGETED = one_step(
    Step(
        name="a",
        pool="p",
        retry=RetryPolicy(max_attempts=100, initial_interval_seconds=10, max_elapsed_seconds=25),
    )
)


def test_retries_stop_when_the_next_attempt_would_start_past_the_time_budget() -> None:
    run = Run(BUDGETED)
    run.start()
    run.advance(1)
    t = run.send(fail("a"))
    assert [x.kind for x in t.timers] == [TimerKind.RETRY]  # 1 s + 10 s is within 25 s
    run.advance(10)
    t = run.send(timer(TimerKind.RETRY, "a", 1))
    assert sent(t) == [("a", FORWARD, 2)]

    run.advance(1)
    t = run.send(fail("a", 2))

    assert "step_failed" in types(t)  # 12 s + 20 s would pass the 25 s budget
    assert run.status is SagaStatus.COMPENSATED


def test_compensations_keep_trying_for_fifteen_minutes_by_default() -> None:
    run = Run(undo_a_then())
    run.start()
    run.send(ok("a"))
    t = run.send(fail("b", retryable=False, type="No"))
    assert sent(t) == [("a", COMPENSATE, 1)]
    attempt = 1
    while True:
        t = run.send(fail("a", attempt, COMPENSATE))
        if run.status is SagaStatus.FAILED:
            break
        [retry] = [x for x in t.timers if x.kind is TimerKind.RETRY]
        run.now = retry.due_at
        run.send(timer(TimerKind.RETRY, "a", attempt, COMPENSATE))
        attempt += 1

    now = (run.now - NOW).total_seconds()
    assert 870 <= now <= 900  # it gave up when the next try would start past 15 minutes
    assert attempt > 30


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
