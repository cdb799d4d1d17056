"""The engine on stale, duplicate, stray and late replies, and a repeated start."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.definitions import RetryPolicy
from orchestrator.engine import (
    Phase,
    SagaStatus,
    Start,
    StepReply,
    StepStatus,
)
from tests.support.engine import (
    COMPENSATE,
    FORWARD,
    NOW,
    Run,
    fail,
    ok,
    three_steps,
    three_steps_in,
    types,
)


def test_a_duplicate_reply_is_ignored_with_a_history_event() -> None:
    run = Run(three_steps())
    run.start()
    run.send(ok("reserve", result=1))
    before = run.instance
    run.advance(1)
    t = run.send(ok("reserve", result=2))
    assert t.dispatches == ()
    assert t.timers == ()
    assert len(t.history) == 1
    event = t.history[0]
    assert (event.type, event.step, event.phase, event.attempt) == (
        "reply_ignored",
        "reserve",
        FORWARD,
        1,
    )
    assert event.data == {"ok": True}
    assert event.seq == before.seq + 1
    assert t.instance.steps == before.steps
    assert t.instance.completed == before.completed
    assert t.instance.status is before.status
    assert t.instance.updated_at == NOW + timedelta(seconds=1)


@pytest.mark.parametrize(
    "reply",
    [
        fail("reserve", 1),  # the same failure again
        ok("reserve", 3),  # an attempt that was never sent
        ok("reserve", 2, COMPENSATE),  # no compensation is running
        ok("ship", 1),  # a step that has not started
        fail("ship", 0, COMPENSATE),  # nor has its compensation
    ],
)
def test_a_stale_reply_is_ignored(reply: StepReply) -> None:
    run = Run(three_steps())
    run.start()
    run.send(fail("reserve", 1))
    before = run.instance
    t = run.send(reply)
    assert types(t) == ["reply_ignored"]
    assert t.dispatches == ()
    assert t.timers == ()
    assert t.instance.steps == before.steps


@pytest.mark.parametrize(
    "stray",
    [
        ok("refund", 1),  # a step the saga does not have
        fail("refund", 1, COMPENSATE),
        ok("bill", 1, COMPENSATE),  # bill has no compensation
    ],
)
def test_a_stray_reply_is_ignored_without_a_pool(stray: StepReply) -> None:
    run = Run(three_steps())
    run.start()
    before = run.instance
    t = run.send(stray)
    assert types(t) == ["reply_ignored"]
    event = t.history[0]
    assert (event.step, event.phase, event.attempt) == (stray.step, stray.phase, 1)
    assert event.pool is None
    assert t.dispatches == ()
    assert t.instance.steps == before.steps


def test_a_failure_reply_during_retry_wait_is_ignored() -> None:
    run = Run(three_steps(reserve=RetryPolicy(max_attempts=2, initial_interval_seconds=1)))
    run.start()
    run.send(fail("reserve"))
    t = run.send(fail("reserve", 1))
    assert types(t) == ["reply_ignored"]
    assert run.step_status("reserve") is StepStatus.RETRY_WAIT


def test_a_success_of_an_earlier_attempt_decides_the_step() -> None:
    """Attempt 1 timed out and attempt 2 is out; attempt 1 then succeeds: its effect is real,
    so the step succeeded (attempt 2's reply will be ignored)."""
    run = Run(three_steps(reserve=RetryPolicy(max_attempts=3, initial_interval_seconds=0)))
    run.start()
    run.send(fail("reserve"))  # attempt 2 dispatched at once
    t = run.send(ok("reserve", 1))
    assert types(t)[:2] == ["step_succeeded", "step_dispatched"]
    assert run.step_status("reserve") is StepStatus.SUCCEEDED
    assert types(run.send(ok("reserve", 2))) == ["reply_ignored"]


def test_replies_after_the_saga_ended_are_ignored() -> None:
    run = three_steps_in("compensated")
    for late in (ok("reserve", phase=COMPENSATE), fail("ship"), ok("ship"), ok("reserve")):
        t = run.send(late)
        assert types(t) == ["reply_ignored"]
        assert t.dispatches == ()
        assert run.status is SagaStatus.COMPENSATED


def test_history_events_name_the_pool_of_their_step_phase() -> None:
    run = three_steps_in("compensating", failing="bill")
    run.send(ok("ship", phase=COMPENSATE))
    run.send(ok("ship", phase=COMPENSATE))  # ignored
    pools: dict[tuple[str, str | None, Phase | None], str | None]
    pools = {(h.type, h.step, h.phase): h.pool for h in run.history}
    assert pools[("step_dispatched", "ship", FORWARD)] == "shipping"
    assert pools[("compensation_dispatched", "ship", COMPENSATE)] == "logistics"
    assert pools[("reply_ignored", "ship", COMPENSATE)] == "logistics"
    assert pools[("step_failed", "bill", FORWARD)] == "payments"
    assert pools[("saga_compensating", None, None)] is None


def test_a_second_start_changes_nothing() -> None:
    run = Run(three_steps())
    run.start()
    before = run.instance
    t = run.send(Start(input=None))
    assert t.history == ()
    assert t.dispatches == ()
    assert t.instance == before
    assert run.step_status("ship") is StepStatus.PENDING  # not run beside reserve


@pytest.mark.parametrize("state", ["compensating", "completed", "compensated"])
def test_start_on_a_later_instance_changes_nothing(state: str) -> None:
    run = three_steps_in(state)
    t = run.send(Start(input=None))
    assert t.history == ()
    assert run.step_status("bill") in (StepStatus.PENDING, StepStatus.SUCCEEDED)
