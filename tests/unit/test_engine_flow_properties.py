"""Property-based tests of the flow engine: random graphs of nested parallels, choices, maps,
child sagas and steps, driven through random outcomes, checked against the reference model in
tests/support/flow_model.py.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.engine import (
    Cancel,
    Event,
    Phase,
    Resume,
    SagaStatus,
    Start,
    TimerFired,
    TimerKind,
)
from orchestrator.engine.state import InstanceState
from tests.support.engine import COMPENSATE, Run, fail, ok
from tests.support.flow_model import (
    FLOW_SETTINGS,
    Graph,
    check_end,
    check_leftovers,
    drive,
    flows,
    replay,
)


@FLOW_SETTINGS
@given(graph=flows(), data=st.data())
def test_random_flows_end_having_run_in_order_and_undone_newest_first(
    graph: Graph, data: st.DataObject
) -> None:
    """Every transition is checked as it happens (see `Checker` and `Sim.apply`); then the
    end, what still arrives after it, and a replay of the same inputs."""
    sim = drive(graph, data)
    check_end(sim)
    replay(sim)
    check_leftovers(sim)


@st.composite
def forged_events(draw: st.DrawFn, instance: InstanceState) -> Event:
    """Well-formed events in any order, naming any step key of the instance (a map's items
    too, once found), a composite node or nothing known, in any phase, any attempt."""
    kind = draw(st.sampled_from(["reply", "reply", "reply", "timer", "cancel", "resume", "start"]))
    if kind == "cancel":
        return Cancel()
    if kind == "resume":
        return Resume()
    if kind == "start":
        return Start(input=None)
    key = draw(st.sampled_from([*instance.steps, *instance.nodes, "unknown", "m9[0]/s1"]))
    phase = draw(st.sampled_from(list(Phase)))
    attempt = draw(st.integers(0, 3))
    if kind == "timer":
        timer_kind = draw(st.sampled_from(list(TimerKind)))
        return TimerFired(kind=timer_kind, step=key, phase=phase, attempt=attempt)
    if draw(st.booleans()):
        return ok(key, attempt, phase, result={"forged": attempt})
    return fail(key, attempt, phase, retryable=draw(st.booleans()))


@settings(FLOW_SETTINGS, max_examples=100)
@given(graph=flows(), data=st.data())
def test_forged_events_never_break_a_flow(graph: Graph, data: st.DataObject) -> None:
    """Forged, out-of-order events never crash decide, break seq, send a forward command once
    the saga stopped going forward, or revive a saga that completed."""
    run = Run(graph.saga, graph.input)
    run.start()
    stopped = run.status is not SagaStatus.RUNNING
    for _ in range(data.draw(st.integers(0, 30), label="events")):
        before = run.instance
        event = data.draw(forged_events(before), label="event")
        t = run.send(event)  # checks seq and dispatches
        if stopped:
            assert all(d.phase is COMPENSATE for d in t.dispatches)
        if before.status is SagaStatus.COMPLETED:
            assert t.instance.status is SagaStatus.COMPLETED
            assert t.instance.steps == before.steps
            assert t.dispatches == ()
        if t.instance.status.terminal:
            assert t.dispatches == ()
        stopped = stopped or t.instance.status is not SagaStatus.RUNNING
