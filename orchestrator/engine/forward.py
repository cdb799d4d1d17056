"""The forward path: start the saga, handle the replies of steps (and child sagas), and hand
a step that failed for good over to compensation. What runs next is `walk`'s to say."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.engine import compensation, operations, walk
from orchestrator.engine.draft import failure_of, replace
from orchestrator.engine.retries import may_retry, retry
from orchestrator.engine.vocabulary import (
    FailureType,
    HistoryEventType,
    Phase,
    SagaStatus,
    StepStatus,
    TimerKind,
)

if TYPE_CHECKING:
    from orchestrator.engine.draft import Draft
    from orchestrator.engine.state import Start, StepReply, StepState
    from orchestrator.engine.vocabulary import Failure


def on_start(draft: Draft, start: Start) -> None:
    if draft.instance.seq != 0:
        return  # started already: a second Start changes nothing
    draft.record(HistoryEventType.SAGA_STARTED, version=draft.definition.version)
    if draft.definition.deadline_seconds is not None:
        draft.schedule(TimerKind.DEADLINE, "", Phase.FORWARD, 0, draft.definition.deadline_seconds)
    walk.advance(draft)


def on_reply(draft: Draft, reply: StepReply) -> None:
    """The reply to a step's own command (or a child saga's end)."""
    state = draft.steps.get(reply.step)
    if state is not None and reply.ok and _gave_up_on(state, reply.attempt):
        _late_success(draft, reply)
        return
    if state is None or not _counts(state, reply):
        draft.ignore(reply)
        return
    if reply.ok:
        _succeed(draft, reply, HistoryEventType.STEP_SUCCEEDED)
        if draft.instance.status is SagaStatus.RUNNING:
            emits = draft.definition.step(reply.step).emits
            draft.emit(emits, draft.scope_of(reply.step), key=reply.step)
            walk.advance(draft)
        else:  # it finished after compensation began: it must be undone too
            compensation.advance(draft)
        return
    attempt_failed(draft, reply.step, reply.attempt, failure_of(reply))


def attempt_failed(draft: Draft, key: str, attempt: int, failure: Failure) -> None:
    """An attempt failed (its reply said so, it timed out, or its retry was abandoned)."""
    step = draft.definition.step(key)
    elapsed = draft.elapsed(draft.steps[key].started_at)
    if draft.instance.status is SagaStatus.RUNNING and may_retry(
        step.retry, attempt, failure, elapsed
    ):
        retry(draft, key, Phase.FORWARD, attempt, failure, step.retry)
        return
    draft.set_step(key, status=StepStatus.FAILED, error=failure, finished_at=draft.now)
    draft.record(
        HistoryEventType.STEP_FAILED,
        step=key,
        phase=Phase.FORWARD,
        attempt=attempt,
        failure=failure,
    )
    if draft.instance.status is SagaStatus.RUNNING:
        # Other branches stop too: nothing new starts, what waits to retry is abandoned.
        operations.stop_forward(draft, failure)
    else:
        compensation.advance(draft)


def _succeed(draft: Draft, reply: StepReply, event: HistoryEventType) -> None:
    """The step's effect happened: record it as completed, in completion order."""
    draft.set_step(
        reply.step, status=StepStatus.SUCCEEDED, result=reply.result, finished_at=draft.now
    )
    draft.instance = replace(draft.instance, completed=(*draft.instance.completed, reply.step))
    draft.record(
        event, step=reply.step, phase=Phase.FORWARD, attempt=reply.attempt, result=reply.result
    )


def _late_success(draft: Draft, reply: StepReply) -> None:
    """A step we gave up on (its last attempt timed out) did succeed after all: its effect
    is real, so it joins the completed steps and is compensated like them, even if that
    reopens an instance that had finished compensating."""
    _succeed(draft, reply, HistoryEventType.STEP_SUCCEEDED_LATE)
    if draft.definition.step(reply.step).compensation is None:
        return  # nothing to undo
    if draft.instance.status is SagaStatus.COMPENSATED:
        draft.set_saga(SagaStatus.COMPENSATING)
    compensation.advance(draft)  # a FAILED saga waits for its operator's retry


def _counts(state: StepState, reply: StepReply) -> bool:
    """Does this forward reply decide the step? A failure only for the attempt in flight; a
    success from any attempt so far, since an earlier one we stopped waiting for (it timed
    out) may still finish, and its effect is real."""
    if reply.ok:
        waiting = state.status in (StepStatus.RUNNING, StepStatus.RETRY_WAIT)
        return waiting and 1 <= reply.attempt <= state.attempt
    return state.status is StepStatus.RUNNING and reply.attempt == state.attempt


# Failures that say nothing about whether the attempt ran: it may still succeed, late.
_UNKNOWN_OUTCOME = frozenset({FailureType.STEP_TIMEOUT, FailureType.DEAD_LETTERED})


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
