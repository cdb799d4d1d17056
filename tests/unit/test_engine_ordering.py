"""The seq check: a reply answers the dispatch whose seq it carries, or is ignored, with why."""

from __future__ import annotations

import msgspec
import pytest

from orchestrator.definitions import ChildSaga, Compensation, RetryPolicy, Saga, Step
from orchestrator.engine import (
    Dispatch,
    Failure,
    ParentLink,
    Phase,
    SagaStatus,
    StepReply,
    StepStatus,
    TimerKind,
    Undo,
    decide,
    new_instance,
)
from orchestrator.engine.state import InstanceState, child_instance_id
from tests.support.engine import (
    COMPENSATE,
    FORWARD,
    INSTANCE_ID,
    NOW,
    ONCE,
    Run,
    sent,
    three_steps,
    timer,
    types,
    undo_a_then,
)


def answer(
    d: Dispatch, *, ok: bool = True, seq: int | None = None, result: object = None
) -> StepReply:
    """The reply a worker sends to `d`: its identity and its seq (or `seq`, to forge one)."""
    failure = None if ok else Failure(type="Boom", message="no", retryable=False)
    return StepReply(
        step=d.step,
        phase=d.phase,
        attempt=d.attempt,
        ok=ok,
        result=result,
        failure=failure,
        seq=d.seq if seq is None else seq,
    )


def started() -> tuple[Run, Dispatch]:
    run = Run(three_steps())
    (d,) = run.start().dispatches
    return run, d


def test_a_dispatch_remembers_its_seq_on_the_step() -> None:
    run, d = started()

    assert run.instance.steps["reserve"].dispatch_seq == d.seq == 2
    assert run.instance.steps["reserve"].compensation_dispatch_seq == 0


def test_a_reply_carrying_its_dispatch_seq_is_applied() -> None:
    run, d = started()

    t = run.send(answer(d, result={"held": 1}))

    assert types(t) == ["step_succeeded", "step_dispatched"]
    assert run.instance.steps["reserve"].result == {"held": 1}


def test_a_reply_for_the_attempt_in_flight_with_another_seq_is_ignored_with_why() -> None:
    run, d = started()
    run.send(answer(d))  # reserve done, ship dispatched at seq 4
    ship = run.dispatches[-1]
    before = run.instance

    t = run.send(answer(ship, seq=d.seq))  # names ship's attempt 1, but seq 2 sent reserve

    assert types(t) == ["reply_ignored"]
    assert t.history[0].data == {
        "ok": True,
        "reason": f"attempt 1 was dispatched at seq {ship.seq}, not {d.seq}",
        "seq": d.seq,
    }
    assert t.instance.steps == before.steps
    assert t.dispatches == ()
    assert t.timers == ()
    # the real reply still decides the step
    assert sent(run.send(answer(ship))) == [("bill", FORWARD, 1)]


def test_a_reply_with_a_seq_the_instance_never_reached_is_ignored() -> None:
    run, d = started()

    t = run.send(answer(d, seq=99, ok=False))

    assert types(t) == ["reply_ignored"]
    assert t.history[0].data["reason"] == f"its seq 99 is ahead of the instance's ({d.seq})"
    assert run.step_status("reserve") is StepStatus.RUNNING


def test_a_reply_without_a_seq_is_not_checked() -> None:
    run, d = started()

    t = run.send(msgspec.structs.replace(answer(d), seq=None))

    assert types(t) == ["step_succeeded", "step_dispatched"]


def test_a_compensation_reply_is_checked_against_the_compensation_dispatch() -> None:
    run, d = started()
    run.send(answer(d))
    ship = run.dispatches[-1]
    (undo,) = run.send(answer(ship, ok=False)).dispatches  # reserve is undone
    assert (undo.step, undo.phase) == ("reserve", COMPENSATE)
    assert run.instance.steps["reserve"].compensation_dispatch_seq == undo.seq

    ignored = run.send(answer(undo, seq=d.seq))  # the forward dispatch's seq
    applied = run.send(answer(undo))

    assert types(ignored) == ["reply_ignored"]
    assert types(applied) == ["compensation_succeeded", "saga_compensated"]


def test_a_late_success_of_an_earlier_attempt_is_still_taken() -> None:
    """Attempt 1 timed out and attempt 2 is out: attempt 1's success, with its own seq (not the
    step's current dispatch seq), still decides the step."""
    retry = RetryPolicy(max_attempts=2, initial_interval_seconds=0)
    run = Run(undo_a_then(Step(name="b", pool="p", timeout_seconds=5, retry=retry)))
    run.start()
    run.send(answer(run.dispatches[-1]))
    first = run.dispatches[-1]
    run.advance(5)
    run.send(timer(TimerKind.TIMEOUT, "b", 1))
    second = run.dispatches[-1]
    assert (second.attempt, run.instance.steps["b"].dispatch_seq) == (2, second.seq)

    t = run.send(answer(first, result="late"))

    assert types(t) == ["step_succeeded", "saga_completed"]
    assert run.instance.steps["b"].result == "late"


def test_a_late_success_after_the_last_timeout_carries_its_dispatch_seq_and_is_undone() -> None:
    undo_b = Compensation(command="undo_b")
    b_step = Step(name="b", pool="p", timeout_seconds=5, retry=ONCE, compensation=undo_b)
    run = Run(undo_a_then(b_step))
    run.start()
    run.send(answer(run.dispatches[-1]))
    b = run.dispatches[-1]
    run.advance(5)
    run.send(timer(TimerKind.TIMEOUT, "b", 1))
    run.send(answer(run.dispatches[-1]))  # a is undone
    assert run.status is SagaStatus.COMPENSATED

    forged = run.send(answer(b, seq=1))
    late = run.send(answer(b))

    assert types(forged) == ["reply_ignored"]
    assert types(late) == ["step_succeeded_late", "saga_compensating", "compensation_dispatched"]


def test_an_instance_stored_before_dispatch_seqs_were_kept_takes_its_replies() -> None:
    run, d = started()
    # the snapshot as an older Warren wrote it: no dispatch_seq
    raw = msgspec.json.decode(msgspec.json.encode(run.instance))
    del raw["steps"]["reserve"]["dispatch_seq"]
    run.instance = msgspec.convert(raw, InstanceState)
    assert run.instance.steps["reserve"].dispatch_seq == 0

    t = run.send(answer(d, seq=1))  # not the dispatch's, but nothing to check it against

    assert types(t) == ["step_succeeded", "step_dispatched"]


# ---- child sagas: the child answers with the parent's seq, kept in its link -----------------


def child_reply(link: ParentLink, *, ok: bool = True) -> StepReply:
    """A child's end as the parent's shell reads it: the link's identity and seq."""
    return StepReply(
        step=link.step, phase=link.phase, attempt=link.attempt, ok=ok, result={}, seq=link.seq
    )


def link_for(d: Dispatch) -> ParentLink:
    return ParentLink(
        instance_id=INSTANCE_ID,
        saga="orders",
        saga_version=2,
        step=d.step,
        command=d.command,
        phase=d.phase,
        attempt=d.attempt,
        seq=d.seq,
    )


def with_child() -> Saga:
    return Saga(
        name="orders",
        version=2,
        steps=(
            Step(name="hold", pool="p", compensation=Compensation(command="release")),
            ChildSaga(name="ship", saga="shipping"),
            Step(name="bill", pool="p"),
        ),
    )


@pytest.mark.parametrize("undo", [False, True])
def test_a_child_sagas_end_answers_the_parents_dispatch(undo: bool) -> None:
    parent = Run(with_child(), {"to": "Lyon"})
    parent.start()
    parent.send(answer(parent.dispatches[-1]))
    order = parent.dispatches[-1]
    assert (order.step, order.phase) == ("ship", FORWARD)
    child_saga = undo_a_then()
    child_id = child_instance_id(INSTANCE_ID, "ship")
    child = new_instance(child_saga, child_id, {}, NOW, parent=link_for(order))
    link = child.parent
    assert link is not None
    if not undo:
        t = parent.send(child_reply(link))
        assert types(t) == ["step_succeeded", "step_dispatched"]
        return
    parent.send(child_reply(link))
    (undo_order,) = parent.send(answer(parent.dispatches[-1], ok=False)).dispatches
    assert (undo_order.step, undo_order.phase) == ("ship", COMPENSATE)
    # the child, completed, is asked to undo: its link now carries the undo order's seq
    done = msgspec.structs.replace(child, status=SagaStatus.COMPLETED, seq=5)
    t = decide(child_saga, done, Undo(attempt=undo_order.attempt, seq=undo_order.seq), NOW)
    undo_link = t.instance.parent
    assert undo_link is not None
    assert (undo_link.phase, undo_link.seq) == (Phase.COMPENSATE, undo_order.seq)

    stale = parent.send(child_reply(link))
    answered = parent.send(child_reply(undo_link))

    assert types(stale) == ["reply_ignored"]  # the forward answer again: a duplicate
    assert types(answered)[0] == "compensation_succeeded"
