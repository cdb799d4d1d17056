"""What operators and clients ask of an instance: cancel it, or resume a `failed` one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.definitions import ChildSaga
from orchestrator.engine import compensation, waits
from orchestrator.engine.draft import replace
from orchestrator.engine.retries import abandoned
from orchestrator.engine.state import Resume
from orchestrator.engine.vocabulary import (
    Failure,
    FailureType,
    HistoryEventType,
    Phase,
    SagaStatus,
    StepStatus,
)

if TYPE_CHECKING:
    from orchestrator.engine.draft import Draft
    from orchestrator.engine.state import Cancel, Undo


def on_cancel(draft: Draft, cancel: Cancel) -> None:
    if draft.instance.status is not SagaStatus.RUNNING:
        return  # finished, or already being undone: nothing more to do
    draft.record(HistoryEventType.SAGA_CANCEL_REQUESTED, reason=cancel.reason)
    stop_forward(draft, Failure(type=FailureType.CANCELLED, message=cancel.reason, retryable=False))


def stop_forward(draft: Draft, failure: Failure) -> None:
    """No new forward step; undo what was done (cancel, deadline)."""
    draft.set_saga(SagaStatus.COMPENSATING, failure)
    waits.end_waits(draft)
    for name, state in list(draft.steps.items()):
        if state.status is StepStatus.SCHEDULED:  # never started: nothing to undo
            draft.set_step(name, status=StepStatus.PENDING)
        if state.status is StepStatus.RETRY_WAIT:  # will not be tried again
            # Keep the last attempt's error: if it was a timeout, that attempt may still
            # succeed late, and must then be compensated.
            draft.set_step(name, status=StepStatus.FAILED, finished_at=draft.now)
            draft.record(
                HistoryEventType.STEP_FAILED,
                step=name,
                phase=Phase.FORWARD,
                attempt=state.attempt,
                failure=abandoned(),
            )
        if state.status is StepStatus.RUNNING and isinstance(
            draft.definition.find(name), ChildSaga
        ):
            draft.cancel_child(name, state.attempt)
    # A step in flight is waited for; if it succeeds, it is compensated too. A child saga in
    # flight is told to stop: it compensates itself and ends its node as failed.
    compensation.advance(draft)


def on_resume(draft: Draft, resume: Resume) -> None:
    if draft.instance.status is not SagaStatus.FAILED:
        return
    draft.record(HistoryEventType.SAGA_RESUMED)
    draft.set_saga(SagaStatus.COMPENSATING)
    for name, state in list(draft.steps.items()):
        if state.status is StepStatus.COMPENSATION_FAILED:
            step = draft.definition.step(name)
            draft.set_step(
                name,
                status=StepStatus.SUCCEEDED,
                compensation_attempts_before_resume=state.compensation_attempt,
                compensation_started_at=draft.now,  # a fresh budget, in time too
            )
            draft.dispatch(step, Phase.COMPENSATE, state.compensation_attempt + 1, name)
            return
    compensation.advance(draft)


def on_undo(draft: Draft, undo: Undo) -> None:
    """The parent compensates the node that ran this child saga: undo what it did."""
    parent = draft.instance.parent
    if parent is None:
        return  # not a child: nothing asked this
    draft.instance = replace(
        draft.instance,
        parent=replace(parent, phase=Phase.COMPENSATE, attempt=undo.attempt, seq=undo.seq),
    )
    status = draft.instance.status
    if status is SagaStatus.FAILED:  # its compensation was stuck: the parent's retry resumes it
        on_resume(draft, Resume())
    elif status is SagaStatus.COMPLETED:
        draft.record(HistoryEventType.CHILD_UNDO_REQUESTED, attempt=undo.attempt)
        draft.set_saga(SagaStatus.COMPENSATING)
        compensation.advance(draft)
    elif status is SagaStatus.COMPENSATED:  # undone already: say so again
        draft.record(HistoryEventType.CHILD_UNDO_REQUESTED, attempt=undo.attempt)
        draft.answer_parent(status)
    # running or compensating: a parent undoes only a child that completed
