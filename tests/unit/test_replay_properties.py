"""Replay, property-based: random sagas and flows, driven by random replies, timers, cancels,
resumes, duplicates and dead letters (the reference models' schedules), and random sagas with
waits driven by events, signals and timeouts too, recorded as the shell records them; replaying the record gives the snapshot every time, and any tampering with the
record or the snapshot is reported as a mismatch."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.definitions import Emit, Saga, Step, WaitFor
from orchestrator.engine import (
    Event,
    EventReceived,
    Phase,
    Signal,
    SignalReceived,
    StepReply,
    TimerFired,
    TimerKind,
)
from orchestrator.engine.replay import Outcome, Recorded, replay_history
from tests.support import engine_model, flow_model
from tests.support.engine import INSTANCE_ID, Run
from tests.support.recording import recorded, snapshot

replace = msgspec.structs.replace


def check_replay(data: st.DataObject, saga: Saga, run: Run) -> None:
    rows, stored = recorded(run), snapshot(run.instance)
    verdict = replay_history(saga, INSTANCE_ID, rows, stored)
    assert verdict.outcome is Outcome.OK, verdict.message
    assert verdict.transitions == len([1 for _, t in run.transitions if t.history])

    rows, stored, where = tamper(data, rows, stored)
    verdict = replay_history(saga, INSTANCE_ID, rows, stored)
    assert verdict.outcome is Outcome.MISMATCH, where
    assert verdict.message
    assert verdict.field is not None


def tamper(
    data: st.DataObject, rows: list[Recorded], stored: Any
) -> tuple[list[Recorded], Any, str]:
    """One change to the record or the snapshot, said in words."""
    kind = data.draw(st.sampled_from(["data", "type", "attempt", "at", "drop", "snapshot"]))
    rows = list(rows)
    if kind == "snapshot":
        # A flow can end with no step in its snapshot (a wait or a child saga alone, say).
        fields = ["seq", "status", "input", *(["step"] if stored["steps"] else [])]
        field = data.draw(st.sampled_from(fields))
        if field == "seq":
            stored = {**stored, "seq": stored["seq"] + 1}
        elif field == "status":
            other = "failed" if stored["status"] != "failed" else "completed"
            stored = {**stored, "status": other}
        elif field == "input":
            stored = {**stored, "input": {"tampered": True}}
        else:
            name = data.draw(st.sampled_from(sorted(stored["steps"])))
            step = stored["steps"][name]
            step = {**step, "attempt": step.get("attempt", 0) + 7}
            stored = {**stored, "steps": {**stored["steps"], name: step}}
        return rows, stored, f"snapshot {field}"
    if kind == "at":
        # a transition's time is its first row's: moved, the whole transition moves with it,
        # which is a consistent record; a later row's time must be its first's
        later = [i for i, row in enumerate(rows) if row.cause is None]
        kind = "at" if later else "data"
        candidates = later or list(range(len(rows)))
    elif kind == "drop":
        # the first row is the start's: dropping it leaves rows without a cause (unverifiable)
        candidates = list(range(1, len(rows)))
    else:
        candidates = list(range(len(rows)))
    index = data.draw(st.sampled_from(candidates))
    row = rows[index]
    if kind == "drop":
        del rows[index]
    elif kind == "data":
        rows[index] = replace(row, data={**row.data, "tampered": True})
    elif kind == "type":
        rows[index] = replace(row, type="tampered")
    elif kind == "attempt":
        rows[index] = replace(row, attempt=(row.attempt or 0) + 7)
    else:
        rows[index] = replace(row, at=row.at + timedelta(microseconds=1))
    return rows, stored, f"{kind} of seq {row.seq}"


@settings(engine_model.PROPERTY_SETTINGS, max_examples=150)
@given(definition=engine_model.sagas(), data=st.data())
def test_replaying_a_random_saga_gives_its_snapshot(definition: Saga, data: st.DataObject) -> None:
    sim = engine_model.drive(definition, data)
    check_replay(data, definition, sim.run)


@settings(flow_model.FLOW_SETTINGS, max_examples=100)
@given(graph=flow_model.flows(), data=st.data())
def test_replaying_a_random_flow_gives_its_snapshot(
    graph: flow_model.Graph, data: st.DataObject
) -> None:
    sim = flow_model.drive(graph, data)
    flow_model.check_leftovers(sim)  # what arrives after the end is in the record too
    check_replay(data, graph.saga, sim.run)


@settings(engine_model.PROPERTY_SETTINGS, max_examples=100)
@given(definition=engine_model.sagas(), data=st.data())
def test_replaying_forged_out_of_order_events_gives_the_snapshot(
    definition: Saga, data: st.DataObject
) -> None:
    """Events in any order, even ones that change nothing (they leave no row: replay skips
    them as the shell does)."""
    run = Run(definition)
    run.start()
    for event in data.draw(st.lists(engine_model.arbitrary_events(definition), max_size=30)):
        if data.draw(st.booleans()):
            run.advance(data.draw(st.floats(0, 30)))
        run.send(event)
    check_replay(data, definition, run)


# ---- with events and signals ----------------------------------------------------------------

EVENT = "payment.captured"


@st.composite
def sagas_with_waits(draw: st.DrawFn) -> Saga:
    """A random saga with one to three waits among its steps: for a correlated event or a
    signal, with or without a timeout, failing or running a path on timeout, and emits."""
    base = draw(engine_model.sagas())
    nodes: list[Any] = list(base.steps)
    for index in range(draw(st.integers(1, 3))):
        timeout = draw(st.sampled_from([None, 30.0]))
        on_timeout = None
        if timeout is not None and draw(st.booleans()):
            on_timeout = [Step(name=f"late_{index}", pool="p0")] if draw(st.booleans()) else []
        emits = [Emit(type="wait.done", data={"got": f"results.w{index}.data"})]
        if draw(st.booleans()):
            wait = WaitFor(
                name=f"w{index}",
                event=EVENT,
                correlate="data.order_id",
                equals="input.order_id",
                timeout_seconds=timeout,
                on_timeout=on_timeout,
                emits=emits if draw(st.booleans()) else [],
            )
        else:
            wait = WaitFor(
                name=f"w{index}",
                signal=draw(st.sampled_from(["go", "stop"])),
                timeout_seconds=timeout,
                on_timeout=on_timeout,
            )
        nodes.insert(draw(st.integers(0, len(nodes))), wait)
    ends = [Emit(type=f"saga.{end}", on=end) for end in ("completed", "compensated", "failed")]
    return Saga(name="waiting", version=1, steps=nodes, emits=ends)


@st.composite
def events_for(draw: st.DrawFn, definition: Saga, run: Run) -> Event:
    """The next thing that happens: mostly an answer to what is under way (a reply to the
    attempt in flight, the event an open wait takes, a signal, a wait's timeout), sometimes
    anything at all."""
    kind = draw(st.sampled_from(["reply", "reply", "event", "signal", "timeout", "any"]))
    waits = [n for n in definition.walk() if isinstance(n, WaitFor)]
    if kind == "reply":
        running = [
            (key, state.attempt)
            for key, state in run.instance.steps.items()
            if state.status.value == "running"
        ]
        compensating = [
            (key, state.compensation_attempt)
            for key, state in run.instance.steps.items()
            if state.status.value == "compensating"
        ]
        if running or compensating:
            key, attempt, phase = draw(
                st.sampled_from(
                    [(k, a, Phase.FORWARD) for k, a in running]
                    + [(k, a, Phase.COMPENSATE) for k, a in compensating]
                )
            )
            state = run.instance.steps[key]
            seq = state.dispatch_seq if phase is Phase.FORWARD else state.compensation_dispatch_seq
            good = draw(st.booleans()) or phase is Phase.COMPENSATE
            return StepReply(step=key, phase=phase, attempt=attempt, ok=good, seq=seq)
    if kind == "event":
        wait = draw(st.sampled_from(waits))
        order = draw(st.sampled_from(["A-1", "B-2"]))
        received = {
            "id": f"e{draw(st.integers(0, 5))}",
            "source": "test",
            "type": EVENT,
            "data": {"order_id": order, "amount": draw(st.integers(0, 9))},
        }
        return EventReceived(wait=wait.name, received=received)
    if kind == "signal":
        name = draw(st.sampled_from(["go", "stop", "other"]))
        return SignalReceived(
            signal=Signal(name=name, id=f"s{draw(st.integers(0, 5))}", data={"n": 1})
        )
    if kind == "timeout":
        wait = draw(st.sampled_from(waits))
        return TimerFired(kind=TimerKind.TIMEOUT, step=wait.name, phase=Phase.FORWARD, attempt=1)
    return draw(engine_model.arbitrary_events(definition))


@settings(engine_model.PROPERTY_SETTINGS, max_examples=150)
@given(definition=sagas_with_waits(), data=st.data())
def test_replaying_a_random_saga_with_events_and_signals_gives_its_snapshot(
    definition: Saga, data: st.DataObject
) -> None:
    run = Run(definition, {"order_id": "A-1"})
    run.start({"order_id": "A-1"})
    for _ in range(data.draw(st.integers(0, 40))):
        if data.draw(st.booleans()):
            run.advance(data.draw(st.floats(0, 40)))
        run.send(data.draw(events_for(definition, run)))
    check_replay(data, definition, run)
