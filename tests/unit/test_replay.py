"""Replay on chosen cases: tagged events, what cannot be verified, a child saga's record, and
how a difference is described."""

from __future__ import annotations

from datetime import timedelta, timezone

import msgspec
import pytest

from orchestrator.engine import (
    Cancel,
    Event,
    Failure,
    ParentLink,
    Phase,
    Resume,
    Start,
    StepReply,
    TimerFired,
    TimerKind,
    Undo,
)
from orchestrator.engine.replay import Cause, Outcome, replay_history
from tests.support.engine import COMPENSATE, INSTANCE_ID, Run, ok, three_steps, undo_a_then
from tests.support.recording import recorded, snapshot

replace = msgspec.structs.replace


@pytest.mark.parametrize(
    ("event", "tag"),
    [
        (Start(input={"a": 1}), "start"),
        (
            StepReply(step="s", phase=Phase.FORWARD, attempt=1, ok=True, result=[1], seq=2),
            "step_reply",
        ),
        (
            TimerFired(kind=TimerKind.RETRY, step="s", phase=Phase.COMPENSATE, attempt=2),
            "timer_fired",
        ),
        (Cancel(reason="r"), "cancel"),
        (Resume(), "resume"),
        (Undo(attempt=1, seq=9), "undo"),
    ],
)
def test_every_engine_event_is_tagged_json_and_reads_back(event: Event, tag: str) -> None:
    encoded = msgspec.json.encode(event)

    assert msgspec.json.decode(encoded)["event"] == tag
    assert msgspec.json.decode(encoded, type=Event) == event


def completed_run() -> Run:
    run = Run(three_steps(), {"n": 1})
    run.start({"n": 1})
    for name in ("reserve", "ship", "bill"):
        run.advance(1.5)
        run.send(ok(name, result={"done": name}))
    return run


def test_a_completed_run_replays_to_its_snapshot() -> None:
    run = completed_run()

    verdict = replay_history(run.definition, INSTANCE_ID, recorded(run), snapshot(run.instance))

    assert verdict.outcome is Outcome.OK
    assert verdict.transitions == 4
    assert "4 transitions" in verdict.message


def test_times_read_back_in_another_time_zone_replay_alike() -> None:
    run = completed_run()
    paris = timezone(timedelta(hours=2))
    rows = [replace(row, at=row.at.astimezone(paris)) for row in recorded(run)]

    verdict = replay_history(run.definition, INSTANCE_ID, rows, snapshot(run.instance))

    assert verdict.outcome is Outcome.OK, verdict.message


def test_a_history_recorded_before_causes_were_kept_cannot_be_verified() -> None:
    run = completed_run()
    rows = [replace(row, cause=None) for row in recorded(run)]

    verdict = replay_history(run.definition, INSTANCE_ID, rows, snapshot(run.instance))

    assert verdict.outcome is Outcome.UNVERIFIABLE
    assert verdict.seq == 1
    assert "without its cause" in verdict.message


def test_a_cause_this_warren_does_not_know_cannot_be_verified() -> None:
    run = completed_run()
    rows = recorded(run)
    assert rows[2].cause is not None  # the first reply's transition
    rows[2] = replace(rows[2], cause={"event": {"event": "from_the_future"}})

    verdict = replay_history(run.definition, INSTANCE_ID, rows, snapshot(run.instance))

    assert verdict.outcome is Outcome.UNVERIFIABLE
    assert verdict.seq == rows[2].seq


def test_a_tampered_snapshot_is_described_by_path_and_values() -> None:
    run = completed_run()
    stored = snapshot(run.instance)
    stored["steps"]["ship"]["result"] = {"done": "forged"}

    verdict = replay_history(run.definition, INSTANCE_ID, recorded(run), stored)

    assert verdict.outcome is Outcome.MISMATCH
    assert (verdict.seq, verdict.field) == (None, "snapshot.steps.ship.result.done")
    assert (verdict.recorded, verdict.replayed) == ("forged", "ship")
    assert verdict.message == (
        "the stored snapshot: snapshot.steps.ship.result.done is 'forged' as recorded "
        "but 'ship' on replay"
    )


def test_a_tampered_history_row_is_described_by_seq_and_field() -> None:
    run = completed_run()
    rows = recorded(run)
    rows[4] = replace(rows[4], attempt=2)

    verdict = replay_history(run.definition, INSTANCE_ID, rows, snapshot(run.instance))

    assert verdict.outcome is Outcome.MISMATCH
    assert (verdict.seq, verdict.field, verdict.recorded, verdict.replayed) == (5, "attempt", 2, 1)


def test_a_history_that_does_not_begin_with_a_start_is_a_mismatch() -> None:
    run = completed_run()
    rows = recorded(run)[2:]  # its start's rows are gone

    verdict = replay_history(run.definition, INSTANCE_ID, rows, snapshot(run.instance))

    assert verdict.outcome is Outcome.MISMATCH
    assert (verdict.field, verdict.recorded, verdict.replayed) == ("cause", "start", "step_reply")


def test_a_child_saga_replays_from_its_parent_link_and_its_parents_undo() -> None:
    link = ParentLink(
        instance_id=INSTANCE_ID, saga="trip", saga_version=1, step="ship", command="saga:s", seq=4
    )
    definition = undo_a_then()
    run = Run(definition)
    run.instance = replace(run.instance, parent=link)
    run.start()
    run.send(ok("a"))
    run.send(ok("b"))  # completed: answers its parent
    run.send(Undo(attempt=1, seq=9))
    run.send(ok("a", phase=COMPENSATE))
    assert run.instance.parent == replace(link, phase=COMPENSATE, seq=9)

    verdict = replay_history(
        definition, INSTANCE_ID, recorded(run, parent=link), snapshot(run.instance)
    )
    orphan = replay_history(definition, INSTANCE_ID, recorded(run), snapshot(run.instance))

    assert verdict.outcome is Outcome.OK, verdict.message
    assert orphan.outcome is Outcome.MISMATCH  # without its link, it answers nobody
    assert Cause(event=Start(input=None), parent=link) == msgspec.convert(
        recorded(run, parent=link)[0].cause, Cause
    )


def test_a_failure_in_a_cause_reads_back_as_a_failure() -> None:
    reply = StepReply(
        step="s",
        phase=Phase.FORWARD,
        attempt=1,
        ok=False,
        failure=Failure(type="Boom", message="no", retryable=False),
    )

    assert msgspec.json.decode(msgspec.json.encode(Cause(event=reply)), type=Cause).event == reply
