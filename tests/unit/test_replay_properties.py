"""Replay, property-based: random sagas and flows, driven by random replies, timers, cancels,
resumes, duplicates and dead letters (the reference models' schedules), recorded as the shell
records them; replaying the record gives the snapshot every time, and any tampering with the
record or the snapshot is reported as a mismatch."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.definitions import Saga
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
        field = data.draw(st.sampled_from(["seq", "status", "input", "step"]))
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
