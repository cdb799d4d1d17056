"""Compensation: undo the completed steps one at a time, newest first, and handle the replies
of their compensating commands.

Newest first across the whole saga: within each branch of a parallel and each item of a map,
that is the reverse of the order its steps completed in, and a step is never undone before
one that completed after it. Steps are keys (``seats[1]/assign`` inside a map's item)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.engine.draft import failure_of
from orchestrator.engine.retries import may_retry, retry
from orchestrator.engine.vocabulary import HistoryEventType, Phase, SagaStatus, StepStatus

if TYPE_CHECKING:
    from orchestrator.engine.draft import Draft
    from orchestrator.engine.state import StepReply
    from orchestrator.engine.vocabulary import Failure

# A step in one of these states has a command out or coming: compensation waits for it.
_BUSY = (
    StepStatus.RUNNING,
    StepStatus.RETRY_WAIT,
    StepStatus.COMPENSATING,
    StepStatus.COMPENSATION_RETRY_WAIT,
)


def advance(draft: Draft) -> None:
    """Undo completed steps one at a time, newest first; finish when nothing is left."""
    if draft.instance.status is not SagaStatus.COMPENSATING:
        return
    if any(state.status in _BUSY for state in draft.steps.values()):
        return
    for key in reversed(draft.instance.completed):
        step = draft.definition.step(key)
        if step.compensation is not None and draft.steps[key].status is StepStatus.SUCCEEDED:
            draft.dispatch(step, Phase.COMPENSATE, 1, key)
            return
    draft.set_saga(SagaStatus.COMPENSATED)


def on_reply(draft: Draft, reply: StepReply) -> None:
    """The reply to a compensating command."""
    state = draft.steps.get(reply.step)
    if (
        state is None
        or state.status is not StepStatus.COMPENSATING
        or state.compensation_attempt != reply.attempt
    ):
        draft.ignore(reply)
        return
    if reply.ok:
        draft.set_step(reply.step, status=StepStatus.COMPENSATED, compensated_at=draft.now)
        draft.record(
            HistoryEventType.COMPENSATION_SUCCEEDED,
            step=reply.step,
            phase=Phase.COMPENSATE,
            attempt=reply.attempt,
            result=reply.result,
        )
        advance(draft)
        return
    attempt_failed(draft, reply.step, reply.attempt, failure_of(reply))


def attempt_failed(draft: Draft, key: str, attempt: int, failure: Failure) -> None:
    """A compensation attempt failed (its reply said so, or it timed out)."""
    step = draft.definition.step(key)
    assert step.compensation is not None
    policy = step.compensation.retry
    state = draft.steps[key]
    used = attempt - state.compensation_attempts_before_resume
    if may_retry(policy, used, failure, draft.elapsed(state.compensation_started_at)):
        retry(draft, key, Phase.COMPENSATE, attempt, failure, policy)
        return
    draft.set_step(key, status=StepStatus.COMPENSATION_FAILED, compensation_error=failure)
    draft.record(
        HistoryEventType.COMPENSATION_FAILED,
        step=key,
        phase=Phase.COMPENSATE,
        attempt=attempt,
        failure=failure,
    )
    draft.set_saga(SagaStatus.FAILED, failure)
