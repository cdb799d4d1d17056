"""Property-based tests of the engine: random sagas driven through random schedules of
replies, duplicates, timers and operator actions, checked against the reference model in
tests/support/engine_model.py.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.definitions import Saga
from orchestrator.engine import (
    Cancel,
    Resume,
    SagaStatus,
    Start,
    StepReply,
    StepStatus,
    TimerFired,
    TimerKind,
    decide,
)
from tests.support.engine import (
    COMPENSATE,
    Run,
    check_transition,
    fail,
    ok,
    types,
)
from tests.support.engine_model import (
    BUSY,
    PROPERTY_SETTINGS,
    arbitrary_events,
    check_final_state,
    check_reply,
    drive,
    has_compensation,
    sagas,
)


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
