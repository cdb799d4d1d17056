"""Delayed steps, saga deadlines and retry jitter in the pure engine."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.definitions import Compensation, RetryPolicy, Saga, Step
from orchestrator.engine import (
    Cancel,
    Failure,
    InstanceState,
    Phase,
    SagaStatus,
    Start,
    StepReply,
    StepStatus,
    TimerFired,
    TimerKind,
    Transition,
    decide,
    new_instance,
)
from orchestrator.errors import DefinitionError

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def start(saga: Saga) -> Transition:
    state = new_instance(saga, uuid.UUID(int=7), {}, NOW)
    return decide(saga, state, Start(input={}), NOW)


def send(saga: Saga, state: InstanceState, event: object, seconds: float = 0) -> Transition:
    assert isinstance(event, Start | StepReply | TimerFired | Cancel)
    return decide(saga, state, event, NOW + timedelta(seconds=seconds))


def types(t: Transition) -> list[str]:
    return [h.type for h in t.history]


DELAYED = Saga(
    name="delayed",
    version=1,
    steps=[
        Step(name="order", pool="p", compensation=Compensation(command="unorder")),
        Step(name="remind", pool="p", delay_seconds=3600),
    ],
)


def test_a_delayed_step_waits_for_its_timer() -> None:
    t = start(DELAYED)
    t = send(
        DELAYED, t.instance, StepReply(step="order", phase=Phase.FORWARD, attempt=1, ok=True), 1
    )

    assert types(t) == ["step_succeeded", "step_scheduled"]
    assert t.dispatches == ()
    assert t.instance.steps["remind"].status is StepStatus.SCHEDULED
    [timer] = t.timers
    assert (timer.kind, timer.step, timer.attempt) == (TimerKind.DELAY, "remind", 1)
    assert timer.due_at == NOW + timedelta(seconds=3601)

    fired = send(
        DELAYED,
        t.instance,
        TimerFired(kind=TimerKind.DELAY, step="remind", phase=Phase.FORWARD, attempt=1),
    )
    assert [(d.step, d.attempt) for d in fired.dispatches] == [("remind", 1)]
    again = send(
        DELAYED,
        fired.instance,
        TimerFired(kind=TimerKind.DELAY, step="remind", phase=Phase.FORWARD, attempt=1),
    )
    assert again.history == ()  # a timer fires once; a copy changes nothing


def test_cancel_while_a_step_waits_for_its_delay_starts_nothing() -> None:
    t = start(DELAYED)
    t = send(DELAYED, t.instance, StepReply(step="order", phase=Phase.FORWARD, attempt=1, ok=True))
    t = send(DELAYED, t.instance, Cancel(reason="changed my mind"))

    assert t.instance.steps["remind"].status is StepStatus.PENDING
    assert [(d.step, d.phase) for d in t.dispatches] == [("order", Phase.COMPENSATE)]
    late = send(
        DELAYED,
        t.instance,
        TimerFired(kind=TimerKind.DELAY, step="remind", phase=Phase.FORWARD, attempt=1),
    )
    assert late.dispatches == ()


DEADLINED = Saga(
    name="deadlined",
    version=1,
    deadline_seconds=60,
    steps=[
        Step(name="a", pool="p", compensation=Compensation(command="undo_a")),
        Step(name="b", pool="p"),
    ],
)


def test_the_deadline_compensates_a_saga_still_running() -> None:
    t = start(DEADLINED)
    assert [(x.kind, x.due_at) for x in t.timers] == [
        (TimerKind.DEADLINE, NOW + timedelta(seconds=60))
    ]
    t = send(DEADLINED, t.instance, StepReply(step="a", phase=Phase.FORWARD, attempt=1, ok=True))

    t = send(
        DEADLINED,
        t.instance,
        TimerFired(kind=TimerKind.DEADLINE, step="", phase=Phase.FORWARD, attempt=0),
        60,
    )

    assert types(t)[:2] == ["saga_deadline_exceeded", "saga_compensating"]
    assert t.instance.failure is not None
    assert t.instance.failure.type == "DeadlineExceeded"
    # b is in flight: it is waited for; a is undone once b has answered
    assert t.dispatches == ()
    t = send(DEADLINED, t.instance, StepReply(step="b", phase=Phase.FORWARD, attempt=1, ok=True))
    assert [(d.step, d.phase) for d in t.dispatches] == [("a", Phase.COMPENSATE)]


def test_the_deadline_of_a_finished_saga_does_nothing() -> None:
    t = start(DEADLINED)
    t = send(DEADLINED, t.instance, StepReply(step="a", phase=Phase.FORWARD, attempt=1, ok=True))
    t = send(DEADLINED, t.instance, StepReply(step="b", phase=Phase.FORWARD, attempt=1, ok=True))
    assert t.instance.status is SagaStatus.COMPLETED

    fired = send(
        DEADLINED,
        t.instance,
        TimerFired(kind=TimerKind.DEADLINE, step="", phase=Phase.FORWARD, attempt=0),
    )

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
    t = start(saga)
    failure = Failure(type="Boom", message="boom", retryable=True)

    t = send(
        saga,
        t.instance,
        StepReply(step="a", phase=Phase.FORWARD, attempt=1, ok=False, failure=failure),
    )

    [timer] = t.timers
    expected = saga.steps[0].retry.delay_before(2, salt=f"{uuid.UUID(int=7)}:a:forward")
    assert timer.due_at == NOW + timedelta(seconds=expected)
    assert t.instance.steps["a"].error == failure  # the last attempt's error is kept while waiting


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


BUDGETED = Saga(
    name="budgeted",
    version=1,
    steps=[
        Step(
            name="a",
            pool="p",
            retry=RetryPolicy(
                max_attempts=100, initial_interval_seconds=10, max_elapsed_seconds=25
            ),
        )
    ],
)
BOOM = Failure(type="Boom", message="boom", retryable=True)


def test_retries_stop_when_the_next_attempt_would_start_past_the_time_budget() -> None:
    t = start(BUDGETED)
    t = send(
        BUDGETED,
        t.instance,
        StepReply(step="a", phase=Phase.FORWARD, attempt=1, ok=False, failure=BOOM),
        1,
    )
    assert [x.kind for x in t.timers] == [TimerKind.RETRY]  # 1 s + 10 s is within 25 s
    t = send(
        BUDGETED,
        t.instance,
        TimerFired(kind=TimerKind.RETRY, step="a", phase=Phase.FORWARD, attempt=1),
        11,
    )
    assert [(d.step, d.attempt) for d in t.dispatches] == [("a", 2)]

    t = send(
        BUDGETED,
        t.instance,
        StepReply(step="a", phase=Phase.FORWARD, attempt=2, ok=False, failure=BOOM),
        12,
    )

    assert "step_failed" in types(t)  # 12 s + 20 s would pass the 25 s budget
    assert t.instance.status is SagaStatus.COMPENSATED


def test_compensations_keep_trying_for_fifteen_minutes_by_default() -> None:
    saga = Saga(
        name="undo",
        version=1,
        steps=[
            Step(name="a", pool="p", compensation=Compensation(command="undo_a")),
            Step(name="b", pool="p"),
        ],
    )
    refused = Failure(type="No", message="no", retryable=False)
    t = start(saga)
    t = send(saga, t.instance, StepReply(step="a", phase=Phase.FORWARD, attempt=1, ok=True))
    t = send(
        saga,
        t.instance,
        StepReply(step="b", phase=Phase.FORWARD, attempt=1, ok=False, failure=refused),
    )
    assert [(d.step, d.phase) for d in t.dispatches] == [("a", Phase.COMPENSATE)]
    state, attempt, now = t.instance, 1, 0.0
    while True:
        t = send(
            saga,
            state,
            StepReply(step="a", phase=Phase.COMPENSATE, attempt=attempt, ok=False, failure=BOOM),
            now,
        )
        state = t.instance
        if state.status is SagaStatus.FAILED:
            break
        [timer] = [x for x in t.timers if x.kind is TimerKind.RETRY]
        now = (timer.due_at - NOW).total_seconds()
        t = send(
            saga,
            state,
            TimerFired(kind=TimerKind.RETRY, step="a", phase=Phase.COMPENSATE, attempt=attempt),
            now,
        )
        state, attempt = t.instance, attempt + 1

    assert 870 <= now <= 900  # it gave up when the next try would start past 15 minutes
    assert attempt > 30
