"""The engine's forward path: start, the happy path, and what every transition keeps."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from orchestrator.engine import (
    Dispatch,
    SagaStatus,
    Start,
    StepStatus,
    TimerKind,
    decide,
    new_instance,
)
from tests.support.engine import (
    COMPENSATE,
    FORWARD,
    INSTANCE_ID,
    NOW,
    Run,
    fail,
    ok,
    sent,
    three_steps,
    three_steps_in,
    timer,
    types,
)


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
    run = three_steps_in("compensated", failing="bill")
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
