"""The pure core: `decide(definition, instance, event, now) -> Transition`. No I/O here.

The shell (orchestrator.service) loads the instance under a row lock, calls `decide`, and writes
the transition's snapshot, history, commands (outbox) and timers in one transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from orchestrator.engine.state import (
    Cancel,
    Dispatch,
    Event,
    HistoryEvent,
    InstanceState,
    Phase,
    Resume,
    SagaStatus,
    ScheduleTimer,
    Start,
    StepReply,
    StepState,
    StepStatus,
    TimerFired,
    TimerKind,
    Transition,
)
from orchestrator.messaging.failure import Failure

if TYPE_CHECKING:
    from uuid import UUID

    from orchestrator.definitions import RetryPolicy, Saga, Step

replace = msgspec.structs.replace


def new_instance(definition: Saga, instance_id: UUID, input: Any, now: datetime) -> InstanceState:
    """A fresh instance, pinned to `definition`'s version; `decide(..., Start(...))` runs it."""
    return InstanceState(
        id=instance_id,
        saga=definition.name,
        version=definition.version,
        status=SagaStatus.RUNNING,
        input=input,
        steps={step.name: StepState() for step in definition.steps},
        created_at=now,
        updated_at=now,
    )


def decide(definition: Saga, instance: InstanceState, event: Event, now: datetime) -> Transition:
    draft = _Draft(definition, instance, now)
    match event:
        case Start():
            draft.on_start()
        case StepReply(phase=Phase.FORWARD):
            draft.on_forward_reply(event)
        case StepReply():
            draft.on_compensation_reply(event)
        case TimerFired():
            draft.on_timer(event)
        case Cancel():
            draft.on_cancel(event)
        case Resume():
            draft.on_resume()
    return draft.transition()


class _Draft:
    """Accumulates one transition. Local and mutable; `decide` stays pure from outside."""

    def __init__(self, definition: Saga, instance: InstanceState, now: datetime) -> None:
        self.definition = definition
        self.instance = instance
        self.steps = dict(instance.steps)
        self.now = now
        self.history: list[HistoryEvent] = []
        self.dispatches: list[Dispatch] = []
        self.timers: list[ScheduleTimer] = []

    # ---- bookkeeping ------------------------------------------------------------------------

    def record(
        self,
        type: str,
        *,
        step: str | None = None,
        phase: Phase | None = None,
        attempt: int | None = None,
        **data: Any,
    ) -> int:
        seq = self.instance.seq + len(self.history) + 1
        pool = self.pool_of(step, phase)
        self.history.append(
            HistoryEvent(
                seq=seq,
                type=type,
                at=self.now,
                step=step,
                phase=phase,
                attempt=attempt,
                pool=pool,
                data=data,
            )
        )
        return seq

    def elapsed(self, since: datetime | None) -> float:
        return (self.now - since).total_seconds() if since is not None else 0.0

    def pool_of(self, step: str | None, phase: Phase | None) -> str | None:
        """The pool a step phase runs on; None when the definition has no such step phase
        (a stray reply names whatever it likes)."""
        node = next((s for s in self.definition.steps if s.name == step), None)
        if node is None or phase is None:
            return None
        if phase is Phase.FORWARD:
            return node.pool
        return node.compensation_pool if node.compensation is not None else None

    def set_step(self, name: str, **changes: Any) -> None:
        self.steps[name] = replace(self.steps[name], **changes)

    def set_saga(self, status: SagaStatus, failure: Failure | None = None) -> None:
        changes: dict[str, Any] = {"status": status}
        if failure is not None and self.instance.failure is None:
            changes["failure"] = failure  # the first cause stays; later ones are in the history
        self.instance = replace(self.instance, **changes)
        data: dict[str, Any] = {"failure": failure} if failure else {}
        self.record(f"saga_{status.value}", **data)

    def transition(self) -> Transition:
        if not self.history:
            return Transition(instance=self.instance)
        instance = replace(
            self.instance,
            steps=self.steps,
            seq=self.history[-1].seq,
            updated_at=self.now,
        )
        return Transition(
            instance=instance,
            history=tuple(self.history),
            dispatches=tuple(self.dispatches),
            timers=tuple(self.timers),
        )

    # ---- dispatching ------------------------------------------------------------------------

    def dispatch(self, step: Step, phase: Phase, attempt: int) -> None:
        if phase is Phase.FORWARD:
            command, pool, timeout = step.command_name, step.pool, step.timeout_seconds
            started = self.steps[step.name].started_at or self.now
            self.set_step(step.name, status=StepStatus.RUNNING, attempt=attempt, started_at=started)
            kind = "step_dispatched"
        else:
            assert step.compensation is not None
            command, pool = step.compensation.command, step.compensation_pool
            timeout = step.compensation.timeout_seconds
            began = self.steps[step.name].compensation_started_at
            if attempt == 1 or began is None:
                began = self.now
            self.set_step(
                step.name,
                status=StepStatus.COMPENSATING,
                compensation_attempt=attempt,
                compensation_started_at=began,
            )
            kind = "compensation_dispatched"
        seq = self.record(kind, step=step.name, phase=phase, attempt=attempt, command=command)
        self.dispatches.append(
            Dispatch(
                step=step.name, phase=phase, command=command, pool=pool, attempt=attempt, seq=seq
            )
        )
        if timeout is not None:
            self.schedule(TimerKind.TIMEOUT, step, phase, attempt, timeout)

    def schedule(
        self, kind: TimerKind, step: Step | None, phase: Phase, attempt: int, delay: float
    ) -> None:
        """A durable timer; `step` is None for the saga's own (its deadline)."""
        due = self.now + timedelta(seconds=delay)
        name = step.name if step is not None else ""
        self.timers.append(
            ScheduleTimer(kind=kind, step=name, phase=phase, attempt=attempt, due_at=due)
        )

    def next_pending(self) -> Step | None:
        return next(
            (s for s in self.definition.steps if self.steps[s.name].status is StepStatus.PENDING),
            None,
        )

    # ---- forward ------------------------------------------------------------------------------

    def on_start(self) -> None:
        if self.instance.seq != 0:
            return  # started already: a second Start changes nothing
        self.record("saga_started", version=self.definition.version)
        if self.definition.deadline_seconds is not None:
            self.schedule(
                TimerKind.DEADLINE, None, Phase.FORWARD, 0, self.definition.deadline_seconds
            )
        self.advance()

    def advance(self) -> None:
        """Run the next step, or finish the saga when none is left."""
        step = self.next_pending()
        if step is None:
            self.set_saga(SagaStatus.COMPLETED)
        elif step.delay_seconds is not None:
            self.set_step(step.name, status=StepStatus.SCHEDULED)
            self.record(
                "step_scheduled",
                step=step.name,
                phase=Phase.FORWARD,
                delay_seconds=step.delay_seconds,
            )
            self.schedule(TimerKind.DELAY, step, Phase.FORWARD, 1, step.delay_seconds)
        else:
            self.dispatch(step, Phase.FORWARD, 1)

    def on_forward_reply(self, reply: StepReply) -> None:
        state = self.steps.get(reply.step)
        if state is not None and reply.ok and _gave_up_on(state, reply.attempt):
            self.late_success(reply)
            return
        if state is None or not _counts(state, reply):
            self.ignore(reply)
            return
        if reply.ok:
            self.succeed(reply, "step_succeeded")
            if self.instance.status is SagaStatus.RUNNING:
                self.advance()
            else:  # it finished after compensation began: it must be undone too
                self.advance_compensation()
            return
        failure = reply.failure or Failure(
            type="UnknownFailure", message="no failure given", retryable=True
        )
        self.forward_attempt_failed(self.definition.step(reply.step), reply.attempt, failure)

    def forward_attempt_failed(self, step: Step, attempt: int, failure: Failure) -> None:
        elapsed = self.elapsed(self.steps[step.name].started_at)
        if self.instance.status is SagaStatus.RUNNING and _may_retry(
            step.retry, attempt, failure, elapsed
        ):
            self.retry(step, Phase.FORWARD, attempt, failure, step.retry)
            return
        self.set_step(step.name, status=StepStatus.FAILED, error=failure, finished_at=self.now)
        self.record(
            "step_failed", step=step.name, phase=Phase.FORWARD, attempt=attempt, failure=failure
        )
        if self.instance.status is SagaStatus.RUNNING:
            self.set_saga(SagaStatus.COMPENSATING, failure)
        self.advance_compensation()

    def retry(
        self, step: Step, phase: Phase, attempt: int, failure: Failure, policy: RetryPolicy
    ) -> None:
        delay = policy.delay_before(attempt + 1, salt=f"{self.instance.id}:{step.name}:{phase}")
        self.record(
            "attempt_failed",
            step=step.name,
            phase=phase,
            attempt=attempt,
            failure=failure,
            retry_in_seconds=delay,
        )
        if delay <= 0:
            self.dispatch(step, phase, attempt + 1)
            return
        wait = (
            StepStatus.RETRY_WAIT if phase is Phase.FORWARD else StepStatus.COMPENSATION_RETRY_WAIT
        )
        if phase is Phase.FORWARD:  # remembered: a cancel now must know how this attempt ended
            self.set_step(step.name, status=wait, error=failure)
        else:
            self.set_step(step.name, status=wait, compensation_error=failure)
        self.schedule(TimerKind.RETRY, step, phase, attempt, delay)

    def succeed(self, reply: StepReply, event: str) -> None:
        """The step's effect happened: record it as completed, in completion order."""
        self.set_step(
            reply.step, status=StepStatus.SUCCEEDED, result=reply.result, finished_at=self.now
        )
        self.instance = replace(self.instance, completed=(*self.instance.completed, reply.step))
        self.record(
            event, step=reply.step, phase=Phase.FORWARD, attempt=reply.attempt, result=reply.result
        )

    def late_success(self, reply: StepReply) -> None:
        """A step we gave up on (its last attempt timed out) did succeed after all: its effect
        is real, so it joins the completed steps and is compensated like them, even if that
        reopens an instance that had finished compensating."""
        self.succeed(reply, "step_succeeded_late")
        if self.definition.step(reply.step).compensation is None:
            return  # nothing to undo
        if self.instance.status is SagaStatus.COMPENSATED:
            self.set_saga(SagaStatus.COMPENSATING)
        self.advance_compensation()  # a FAILED saga waits for its operator's retry

    def ignore(self, reply: StepReply) -> None:
        """A duplicate, late or stale reply: recorded for operators, otherwise without effect."""
        self.record(
            "reply_ignored", step=reply.step, phase=reply.phase, attempt=reply.attempt, ok=reply.ok
        )

    # ---- compensation -----------------------------------------------------------------------

    def advance_compensation(self) -> None:
        """Undo completed steps one at a time, newest first; finish when nothing is left."""
        busy = (
            StepStatus.RUNNING,
            StepStatus.RETRY_WAIT,
            StepStatus.COMPENSATING,
            StepStatus.COMPENSATION_RETRY_WAIT,
        )
        if self.instance.status is not SagaStatus.COMPENSATING:
            return
        if any(state.status in busy for state in self.steps.values()):
            return
        for name in reversed(self.instance.completed):
            step = self.definition.step(name)
            if step.compensation is not None and self.steps[name].status is StepStatus.SUCCEEDED:
                self.dispatch(step, Phase.COMPENSATE, 1)
                return
        self.set_saga(SagaStatus.COMPENSATED)

    def on_compensation_reply(self, reply: StepReply) -> None:
        state = self.steps.get(reply.step)
        if (
            state is None
            or state.status is not StepStatus.COMPENSATING
            or state.compensation_attempt != reply.attempt
        ):
            self.ignore(reply)
            return
        if reply.ok:
            self.set_step(reply.step, status=StepStatus.COMPENSATED, compensated_at=self.now)
            self.record(
                "compensation_succeeded",
                step=reply.step,
                phase=Phase.COMPENSATE,
                attempt=reply.attempt,
                result=reply.result,
            )
            self.advance_compensation()
            return
        failure = reply.failure or Failure(
            type="UnknownFailure", message="no failure given", retryable=True
        )
        self.compensation_attempt_failed(self.definition.step(reply.step), reply.attempt, failure)

    def compensation_attempt_failed(self, step: Step, attempt: int, failure: Failure) -> None:
        assert step.compensation is not None
        policy = step.compensation.retry
        state = self.steps[step.name]
        used = attempt - state.compensation_attempts_before_resume
        if _may_retry(policy, used, failure, self.elapsed(state.compensation_started_at)):
            self.retry(step, Phase.COMPENSATE, attempt, failure, policy)
            return
        self.set_step(step.name, status=StepStatus.COMPENSATION_FAILED, compensation_error=failure)
        self.record(
            "compensation_failed",
            step=step.name,
            phase=Phase.COMPENSATE,
            attempt=attempt,
            failure=failure,
        )
        self.set_saga(SagaStatus.FAILED, failure)

    # ---- operators --------------------------------------------------------------------------

    def on_cancel(self, cancel: Cancel) -> None:
        if self.instance.status is not SagaStatus.RUNNING:
            return  # finished, or already being undone: nothing more to do
        self.record("saga_cancel_requested", reason=cancel.reason)
        self.stop_forward(Failure(type="Cancelled", message=cancel.reason, retryable=False))

    def stop_forward(self, failure: Failure) -> None:
        """No new forward step; undo what was done (cancel, deadline)."""
        self.set_saga(SagaStatus.COMPENSATING, failure)
        for name, state in list(self.steps.items()):
            if state.status is StepStatus.SCHEDULED:  # never started: nothing to undo
                self.set_step(name, status=StepStatus.PENDING)
            if state.status is StepStatus.RETRY_WAIT:  # will not be tried again
                # Keep the last attempt's error: if it was a timeout, that attempt may still
                # succeed late, and must then be compensated.
                self.set_step(name, status=StepStatus.FAILED, finished_at=self.now)
                self.record(
                    "step_failed",
                    step=name,
                    phase=Phase.FORWARD,
                    attempt=state.attempt,
                    failure=_abandoned(),
                )
        # A step in flight is waited for; if it succeeds, it is compensated too.
        self.advance_compensation()

    def on_resume(self) -> None:
        if self.instance.status is not SagaStatus.FAILED:
            return
        self.record("saga_resumed")
        self.set_saga(SagaStatus.COMPENSATING)
        for name, state in list(self.steps.items()):
            if state.status is StepStatus.COMPENSATION_FAILED:
                step = self.definition.step(name)
                self.set_step(
                    name,
                    status=StepStatus.SUCCEEDED,
                    compensation_attempts_before_resume=state.compensation_attempt,
                    compensation_started_at=self.now,  # a fresh budget, in time too
                )
                self.dispatch(step, Phase.COMPENSATE, state.compensation_attempt + 1)
                return
        self.advance_compensation()

    # ---- timers -------------------------------------------------------------------------------

    def on_deadline(self) -> None:
        seconds = self.definition.deadline_seconds
        if self.instance.status is not SagaStatus.RUNNING or seconds is None:
            return
        self.record("saga_deadline_exceeded", deadline_seconds=seconds)
        message = f"still running {seconds} s after it started"
        self.stop_forward(Failure(type="DeadlineExceeded", message=message, retryable=False))

    def on_timer(self, timer: TimerFired) -> None:
        if timer.kind is TimerKind.DEADLINE:
            self.on_deadline()
            return
        state = self.steps.get(timer.step)
        if state is None:
            return
        if timer.kind is TimerKind.DELAY:
            if state.status is StepStatus.SCHEDULED and self.instance.status is SagaStatus.RUNNING:
                self.dispatch(self.definition.step(timer.step), Phase.FORWARD, 1)
            return
        step = self.definition.step(timer.step)
        forward = timer.phase is Phase.FORWARD
        attempt = state.attempt if forward else state.compensation_attempt
        if attempt != timer.attempt:
            return  # a timer of an attempt that is over: nothing to do
        if timer.kind is TimerKind.RETRY:
            if forward and state.status is StepStatus.RETRY_WAIT:
                if self.instance.status is SagaStatus.RUNNING:
                    self.dispatch(step, Phase.FORWARD, attempt + 1)
                else:  # the saga is being undone: this step will not be tried again
                    self.forward_attempt_failed(step, attempt, state.error or _abandoned())
            elif not forward and state.status is StepStatus.COMPENSATION_RETRY_WAIT:
                self.dispatch(step, Phase.COMPENSATE, attempt + 1)
            return
        timeout = Failure(
            type="StepTimeout", message=f"attempt {attempt} did not reply in time", retryable=True
        )
        if forward and state.status is StepStatus.RUNNING:
            self.record("attempt_timed_out", step=step.name, phase=timer.phase, attempt=attempt)
            self.forward_attempt_failed(step, attempt, timeout)
        elif not forward and state.status is StepStatus.COMPENSATING:
            self.record("attempt_timed_out", step=step.name, phase=timer.phase, attempt=attempt)
            self.compensation_attempt_failed(step, attempt, timeout)


def _counts(state: StepState, reply: StepReply) -> bool:
    """Does this forward reply decide the step? A failure only for the attempt in flight; a
    success from any attempt so far, since an earlier one we stopped waiting for (it timed
    out) may still finish, and its effect is real."""
    if reply.ok:
        waiting = state.status in (StepStatus.RUNNING, StepStatus.RETRY_WAIT)
        return waiting and 1 <= reply.attempt <= state.attempt
    return state.status is StepStatus.RUNNING and reply.attempt == state.attempt


# Failures that say nothing about whether the attempt ran: it may still succeed, late.
_UNKNOWN_OUTCOME = frozenset({"StepTimeout", "DeadLettered"})


def _gave_up_on(state: StepState, attempt: int) -> bool:
    """Did we count `attempt` of this failed step as failed without hearing its outcome? An
    earlier attempt (one we stopped waiting for) or a last attempt that timed out."""
    if state.status is not StepStatus.FAILED or attempt < 1:
        return False
    if attempt < state.attempt:
        return True
    return (
        attempt == state.attempt
        and state.error is not None
        and state.error.type in _UNKNOWN_OUTCOME
    )


def _may_retry(policy: RetryPolicy, attempt: int, failure: Failure, elapsed: float) -> bool:
    """`attempt` attempts made, the first `elapsed` seconds ago: is another one allowed?"""
    if not failure.retryable or failure.type in policy.non_retryable_errors:
        return False
    if attempt >= policy.max_attempts:
        return False
    budget = policy.max_elapsed_seconds
    return budget is None or elapsed + policy.delay_before(attempt + 1) <= budget


def _abandoned() -> Failure:
    return Failure(type="Abandoned", message="the saga is compensating", retryable=False)
