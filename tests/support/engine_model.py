"""The reference model of the engine's property-based tests (tests/unit/test_engine_properties.py).

Random sagas, a random schedule of replies, duplicates, dead letters, timers and operator
actions (`Sim`, `drive`), and the rules every reply and every final state must obey, written
independently of the engine (`reply_effect`, `check_reply`, `check_final_state`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from orchestrator.definitions import Compensation, RetryPolicy, Saga, Step
from orchestrator.engine import (
    Cancel,
    Dispatch,
    Event,
    InstanceState,
    Phase,
    Resume,
    SagaStatus,
    ScheduleTimer,
    Start,
    StepReply,
    StepStatus,
    TimerFired,
    TimerKind,
    Transition,
)
from tests.support.engine import (
    COMPENSATE,
    FORWARD,
    Run,
    fail,
    ok,
    sent,
    types,
)

Outcome = Literal["ok", "retryable", "business"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "retryable", "business")
# Success is likelier, so that long sagas get far enough to have something to compensate.
WEIGHTED_OUTCOMES: tuple[Outcome, ...] = ("ok", "ok", "ok", "ok", "retryable", "business")
MAX_DUPLICATES = 8
MAX_DEAD_LETTERS = 2
MAX_RESUMES = 2
BUSY = (
    StepStatus.RUNNING,
    StepStatus.RETRY_WAIT,
    StepStatus.COMPENSATING,
    StepStatus.COMPENSATION_RETRY_WAIT,
)
UNKNOWN_OUTCOME = ("StepTimeout", "DeadLettered")
"""Failures that say nothing about whether the attempt ran: it may still succeed, late."""


@st.composite
def retry_policies(draw: st.DrawFn) -> RetryPolicy:
    initial = draw(st.sampled_from([0.0, 1.0, 2.5]))
    return RetryPolicy(max_attempts=draw(st.integers(1, 3)), initial_interval_seconds=initial)


@st.composite
def sagas(draw: st.DrawFn) -> Saga:
    """1-6 steps; retries with or without delays."""
    count = draw(st.integers(1, 6))
    steps: list[Step] = []
    for i in range(count):
        compensation = None
        if draw(st.booleans()):
            compensation = Compensation(
                command=f"undo_{i}",
                pool=draw(st.sampled_from([None, "undo"])),
                retry=draw(retry_policies()),
                timeout_seconds=draw(st.sampled_from([None, 10.0])),
            )
        steps.append(
            Step(
                name=f"s{i}",
                pool=draw(st.sampled_from(["p0", "p1"])),
                compensation=compensation,
                retry=draw(retry_policies()),
                timeout_seconds=draw(st.sampled_from([None, None, 10.0])),
            )
        )
    return Saga(name="random", version=1, steps=tuple(steps))


def event_bound(definition: Saga) -> int:
    """Events a complete run can need: per attempt a reply, a dead letter, a timeout and a
    retry timer (a late reply is its attempt's reply)."""
    forward = sum(4 * s.retry.max_attempts for s in definition.tasks)
    undo = [4 * s.compensation.retry.max_attempts for s in definition.tasks if s.compensation]
    per_resume = 1 + max(undo, default=0)
    return 1 + forward + sum(undo) + MAX_DUPLICATES + 1 + MAX_RESUMES * per_resume


Effect = Literal["decides", "late", "ignored"]


def has_compensation(definition: Saga, name: str) -> bool:
    return definition.step(name).compensation is not None


def reply_effect(instance: InstanceState, reply: StepReply) -> Effect:
    """What a reply does to `instance`, by the engine's rules:

    - a compensation reply decides only the compensation attempt in flight;
    - a forward failure decides only the attempt in flight (RUNNING, the current attempt);
    - a forward success decides its step while the step waits (RUNNING or RETRY_WAIT) and the
      attempt is one sent so far: an earlier attempt we stopped waiting for may still finish;
    - a forward success of a FAILED step is a late success when we never heard that attempt's
      outcome: an earlier attempt, or the current one if it failed by timeout or dead letter;
    - anything else (a duplicate, a stale or contradicting reply) is ignored."""
    state = instance.steps.get(reply.step)
    if state is None:
        return "ignored"
    if reply.phase is COMPENSATE:
        in_flight = state.status is StepStatus.COMPENSATING
        return "decides" if in_flight and reply.attempt == state.compensation_attempt else "ignored"
    if not reply.ok:
        in_flight = state.status is StepStatus.RUNNING and reply.attempt == state.attempt
        return "decides" if in_flight else "ignored"
    sent_so_far = 1 <= reply.attempt <= state.attempt
    if state.status in (StepStatus.RUNNING, StepStatus.RETRY_WAIT) and sent_so_far:
        return "decides"
    unheard = reply.attempt < state.attempt or (
        state.error is not None and state.error.type in UNKNOWN_OUTCOME
    )
    if state.status is StepStatus.FAILED and sent_so_far and unheard:
        return "late"
    return "ignored"


def check_reply(definition: Saga, before: InstanceState, reply: StepReply, t: Transition) -> Effect:
    """`t` is what `reply` did to `before`: check it against `reply_effect`."""
    effect = reply_effect(before, reply)
    after, kinds = t.instance, types(t)
    if effect == "ignored":
        assert kinds == ["reply_ignored"]
        assert t.dispatches == ()
        assert t.timers == ()
        assert after.steps == before.steps
        assert after.status is before.status
        assert after.completed == before.completed
        assert after.failure == before.failure
        return effect
    first = t.history[0]
    assert (first.step, first.phase, first.attempt) == (reply.step, reply.phase, reply.attempt)
    assert after.failure == before.failure or before.failure is None  # the first cause stays
    if reply.phase is COMPENSATE:
        decided = "compensation_succeeded" if reply.ok else "attempt_failed compensation_failed"
        assert first.type in decided.split()
        return effect
    if not reply.ok:
        assert first.type in ("attempt_failed", "step_failed")
        return effect
    # a success: the step joins `completed`, with this attempt's result
    assert first.type == ("step_succeeded" if effect == "decides" else "step_succeeded_late")
    assert after.completed == (*before.completed, reply.step)
    assert after.steps[reply.step].result == reply.result
    if effect == "decides":
        return effect
    # a late success: a step fails for good only once the saga stopped running forward
    assert before.status in (SagaStatus.COMPENSATING, SagaStatus.COMPENSATED, SagaStatus.FAILED)
    assert after.failure == before.failure
    others = {n: s for n, s in after.steps.items() if n != reply.step}
    assert others == {n: s for n, s in before.steps.items() if n != reply.step}
    reopens = before.status is SagaStatus.COMPENSATED
    if reopens and has_compensation(definition, reply.step):  # undo it: the saga reopens
        assert kinds == ["step_succeeded_late", "saga_compensating", "compensation_dispatched"]
        assert sent(t) == [(reply.step, COMPENSATE, 1)]
        assert after.status is SagaStatus.COMPENSATING
        assert after.steps[reply.step].status is StepStatus.COMPENSATING
    else:  # nothing to undo; or undone in its turn, after the compensation in flight (a
        # compensating saga always has one) or after an operator's resume (a failed saga)
        assert kinds == ["step_succeeded_late"]
        assert t.dispatches == ()
        assert after.status is before.status
        assert after.steps[reply.step].status is StepStatus.SUCCEEDED
    return effect


@dataclass
class Sim:
    """A random schedule: replies to outstanding dispatches (even after the end), duplicates,
    dead letters, timers, operators."""

    definition: Saga
    run: Run
    outstanding: list[Dispatch] = field(default_factory=list)
    timers: list[ScheduleTimer] = field(default_factory=list)
    replies: list[StepReply] = field(default_factory=list)
    effects: set[str] = field(default_factory=set)
    """Steps a worker reported a success for: their effect is real."""
    dead_lettered: list[Dispatch] = field(default_factory=list)
    duplicates: int = 0
    resumes: int = 0
    cancelled: bool = False
    events: int = 0
    compensation_began_at: int | None = None

    def apply(self, event: Event) -> Transition:
        self.events += 1
        before = self.run.instance
        t = self.run.send(event)
        for h in t.history:
            if h.type == "saga_compensating" and self.compensation_began_at is None:
                self.compensation_began_at = h.seq
        if self.compensation_began_at is not None:  # no forward command once undoing began
            assert all(
                d.phase is COMPENSATE for d in t.dispatches if d.seq > self.compensation_began_at
            )
        if before.status is not SagaStatus.RUNNING:
            assert all(d.phase is COMPENSATE for d in t.dispatches)
        if self.run.status.terminal:
            assert t.dispatches == ()
            assert t.timers == ()
        busy = [n for n, state in self.run.instance.steps.items() if state.status in BUSY]
        assert len(busy) <= 1  # a straight line does one thing at a time
        if self.run.status in (SagaStatus.RUNNING, SagaStatus.COMPENSATING):
            assert len(busy) == 1  # ... and, until it ends, always something
        self.outstanding.extend(t.dispatches)
        self.timers.extend(t.timers)
        return t

    def reply(self, reply: StepReply) -> Effect:
        self.replies.append(reply)
        before = self.run.instance
        return check_reply(self.definition, before, reply, self.apply(reply))

    def answer(self, dispatch: Dispatch, outcome: Outcome) -> None:
        if outcome == "ok":
            reply = ok(
                dispatch.step, dispatch.attempt, dispatch.phase, result={"seq": dispatch.seq}
            )
            if dispatch.phase is FORWARD:
                self.effects.add(dispatch.step)
        else:
            reply = fail(
                dispatch.step, dispatch.attempt, dispatch.phase, retryable=outcome == "retryable"
            )
        self.reply(replace(reply, seq=dispatch.seq))  # as a worker answers: with its seq

    def dead_letter(self, dispatch: Dispatch) -> None:
        """The command was dead-lettered: the shell fails its attempt (non-retryable
        DeadLettered). A replay may still run it, so it stays outstanding."""
        self.dead_lettered.append(dispatch)
        step, attempt, phase = dispatch.step, dispatch.attempt, dispatch.phase
        failed = fail(step, attempt, phase, retryable=False, type="DeadLettered")
        self.reply(replace(failed, seq=dispatch.seq))

    def duplicate(self, reply: StepReply) -> None:
        """A reply that was applied already, again: it changes nothing."""
        self.duplicates += 1
        before = self.run.instance
        t = self.apply(reply)
        assert check_reply(self.definition, before, reply, t) == "ignored"

    def fire(self, scheduled: ScheduleTimer) -> None:
        self.run.now = max(self.run.now, scheduled.due_at)
        self.apply(
            TimerFired(
                kind=scheduled.kind,
                step=scheduled.step,
                phase=scheduled.phase,
                attempt=scheduled.attempt,
            )
        )

    def cancel(self) -> None:
        self.cancelled = True
        self.apply(Cancel(reason="random"))

    def resume(self) -> None:
        self.resumes += 1
        t = self.apply(Resume())
        assert types(t)[:2] == ["saga_resumed", "saga_compensating"]
        assert len(t.dispatches) == 1


def drive(definition: Saga, data: st.DataObject) -> Sim:
    sim = Sim(definition, Run(definition, {"n": 1}))
    sim.apply(Start(input={"n": 1}))
    bound = event_bound(definition)
    # half the runs may see an operator's cancel, at a random point
    may_cancel = data.draw(st.booleans(), label="may cancel")
    while True:
        assert sim.events <= bound, "the saga did not finish within the bound"
        status = sim.run.status
        resumable = status is SagaStatus.FAILED and sim.resumes < MAX_RESUMES
        if resumable and data.draw(st.booleans(), label="resume"):
            sim.resume()
            continue
        choices: list[str] = []
        if status.terminal:
            # replies still in flight may arrive after the end: a late success may reopen it
            if not sim.outstanding or data.draw(st.booleans(), label="stop"):
                break
            choices.append("answer")
        else:
            if sim.outstanding:
                choices.append("answer")
            if sim.timers:
                choices.append("timer")
            assert choices, "the saga is stuck with nothing to wait for"
            if sim.replies and sim.duplicates < MAX_DUPLICATES:
                choices.append("duplicate")
            if may_cancel and not sim.cancelled:
                # likelier while a step waits to retry: the cancel then abandons it
                waiting = StepStatus.RETRY_WAIT in [
                    s.status for s in sim.run.instance.steps.values()
                ]
                if waiting or data.draw(st.integers(0, 3), label="cancel?") == 0:
                    choices.append("cancel")
            dead_letterable = [d for d in sim.outstanding if d not in sim.dead_lettered]
            rare = len(sim.dead_lettered) < MAX_DEAD_LETTERS
            if dead_letterable and rare and data.draw(st.integers(0, 9), label="dead?") == 0:
                choices.append("dead letter")
        action = data.draw(st.sampled_from(choices), label="action")
        if action == "answer":
            index = data.draw(st.integers(0, len(sim.outstanding) - 1), label="dispatch")
            outcome = data.draw(st.sampled_from(WEIGHTED_OUTCOMES), label="outcome")
            sim.answer(sim.outstanding.pop(index), outcome)
        elif action == "timer":
            index = data.draw(st.integers(0, len(sim.timers) - 1), label="timer")
            sim.fire(sim.timers.pop(index))
        elif action == "cancel":
            sim.cancel()
        elif action == "duplicate":
            index = data.draw(st.integers(0, len(sim.replies) - 1), label="duplicate of")
            sim.duplicate(sim.replies[index])
        else:
            index = data.draw(st.integers(0, len(dead_letterable) - 1), label="dead letter")
            sim.dead_letter(dead_letterable[index])
    return sim


PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def check_final_state(sim: Sim) -> None:
    definition, run = sim.definition, sim.run
    instance, history = run.instance, run.history
    names = [s.name for s in definition.tasks]

    def compensable(name: str) -> bool:
        return has_compensation(definition, name)

    # seq strictly increases by one per history event, from 1
    assert [h.seq for h in history] == list(range(1, len(history) + 1))
    assert instance.seq == len(history)
    # each dispatch points at its own history event
    by_seq = {h.seq: h for h in history}
    for d in run.dispatches:
        event = by_seq[d.seq]
        assert (event.step, event.phase, event.attempt) == (d.step, d.phase, d.attempt)

    # steps succeed in definition order, and `completed` records exactly that order; only the
    # step that failed can succeed late, so a late success keeps that order too
    successes = [h for h in history if h.type in ("step_succeeded", "step_succeeded_late")]
    succeeded: list[str] = []
    for h in successes:  # the result is the one of the attempt that decided the step
        assert h.step is not None
        assert instance.steps[h.step].result == h.data["result"]
        succeeded.append(h.step)
    assert list(instance.completed) == succeeded
    assert succeeded == names[: len(succeeded)]
    # a worker's success is never lost: exactly the steps it reported a success for succeeded
    assert set(succeeded) == sim.effects
    late = [h for h in history if h.type == "step_succeeded_late"]
    assert len(late) <= 1
    if late:
        assert late[0].step == succeeded[-1]
        assert sim.compensation_began_at is not None
        assert sim.compensation_began_at < late[0].seq
        failed_before = [h for h in history if h.type == "step_failed" and h.seq < late[0].seq]
        assert [h.step for h in failed_before] == [late[0].step]
    # forward attempts of a step are numbered 1, 2, ... and never exceed the policy
    for name in names:
        attempts = [d.attempt for d in run.dispatches if d.step == name and d.phase is FORWARD]
        assert attempts == list(range(1, len(attempts) + 1))
        assert len(attempts) <= definition.step(name).retry.max_attempts
    # a step that failed for good says so in the history (a cancel during a retry wait too,
    # as Abandoned); the step keeps how its last attempt ended
    failed = [n for n in names if instance.steps[n].status is StepStatus.FAILED]
    assert len(failed) <= 1
    for name in failed:
        state = instance.steps[name]
        own = [h for h in history if h.step == name and h.type != "reply_ignored"]
        last = own[-1]
        assert last.type == "step_failed"
        assert last.attempt == state.attempt
        if last.data["failure"].type == "Abandoned":
            assert own[-2].type == "attempt_failed"
            assert (own[-2].attempt, own[-2].data["failure"]) == (state.attempt, state.error)
        else:
            assert last.data["failure"] == state.error
        assert names.index(name) == len(instance.completed)

    # the saga left the happy path once; its first cause stays
    compensating = [h for h in history if h.type == "saga_compensating"]
    if instance.status is not SagaStatus.COMPLETED:
        first = compensating[0]
        assert first.seq == sim.compensation_began_at
        assert instance.failure is not None
        assert instance.failure == first.data["failure"]
        cause = history[first.seq - 2]  # the event just before
        if instance.failure.type == "Cancelled":
            assert sim.cancelled
            assert cause.type == "saga_cancel_requested"
        else:
            assert cause.type == "step_failed"
            assert cause.data["failure"] == instance.failure
        # a reopen or a resume gives no new cause
        assert all("failure" not in h.data for h in compensating[1:])

    compensations = [d for d in run.dispatches if d.phase is COMPENSATE]
    first_undo: dict[str, int] = {}  # step -> seq of its first compensation dispatch
    for d in compensations:
        first_undo.setdefault(d.step, d.seq)
    undone_order = list(first_undo)
    # newest first; a late success is undone next, after what was undone before it arrived
    expected_order = [n for n in reversed(instance.completed) if compensable(n)]
    if late and compensable(succeeded[-1]):
        older = expected_order[1:]
        before_late = [n for n in undone_order if first_undo[n] < late[0].seq]
        assert before_late == older[: len(before_late)]
        expected_order = [*before_late, succeeded[-1], *older[len(before_late) :]]
    compensated = [h.step for h in history if h.type == "compensation_succeeded"]

    if instance.status is SagaStatus.COMPLETED:
        assert all(instance.steps[n].status is StepStatus.SUCCEEDED for n in names)
        assert instance.completed == tuple(names)
        assert compensations == []
        assert sim.compensation_began_at is None
        assert compensating == []
        assert instance.failure is None
    elif instance.status is SagaStatus.COMPENSATED:
        assert undone_order == expected_order
        assert compensated == expected_order  # each compensated exactly once
        if not failed and not late:  # nothing failed: a cancel stopped it
            assert sim.cancelled
            assert "saga_cancel_requested" in [h.type for h in history]
        for n in names:
            status = instance.steps[n].status
            if n in instance.completed:  # every effect is undone (if it can be)
                expected = StepStatus.COMPENSATED if compensable(n) else StepStatus.SUCCEEDED
                assert status is expected
            elif n not in failed:
                assert status is StepStatus.PENDING
    else:
        assert instance.status is SagaStatus.FAILED
        broken = [n for n in names if instance.steps[n].status is StepStatus.COMPENSATION_FAILED]
        assert len(broken) == 1
        assert undone_order == expected_order[: len(undone_order)]
        assert undone_order[-1] == broken[0]
        assert compensated == undone_order[:-1]
        for n in instance.completed:  # the rest, a late success too, waits for a resume
            if n in compensated:
                assert instance.steps[n].status is StepStatus.COMPENSATED
            elif n != broken[0]:
                assert instance.steps[n].status is StepStatus.SUCCEEDED
        error = instance.steps[broken[0]].compensation_error
        assert error is not None
        assert [h for h in history if h.type == "saga_failed"][-1].data["failure"] == error


@st.composite
def arbitrary_events(draw: st.DrawFn, definition: Saga) -> Event:
    """Well-formed events in any order: replies and timers naming any step (even one the saga
    lacks), any phase (even a compensation that does not exist) and any attempt; cancel;
    resume; Start again."""
    kind = draw(st.sampled_from(["reply", "reply", "reply", "timer", "cancel", "resume", "start"]))
    if kind == "cancel":
        return Cancel()
    if kind == "resume":
        return Resume()
    if kind == "start":
        return Start(input=None)
    # mostly steps that can answer in that phase; sometimes strays
    sensible = [(s.name, FORWARD) for s in definition.tasks]
    sensible += [(s.name, COMPENSATE) for s in definition.tasks if s.compensation is not None]
    strays = [
        (name, phase)
        for name in [*(s.name for s in definition.tasks), "unknown"]
        for phase in Phase
    ]
    step, phase = draw(st.sampled_from(sensible) | st.sampled_from(strays))
    attempt = draw(st.integers(0, 4))
    if kind == "timer":
        timer_kind = draw(st.sampled_from(list(TimerKind)))
        return TimerFired(kind=timer_kind, step=step, phase=phase, attempt=attempt)
    outcome = draw(st.sampled_from(OUTCOMES))
    if outcome == "ok":
        return ok(step, attempt, phase)
    return fail(step, attempt, phase, retryable=outcome == "retryable")
