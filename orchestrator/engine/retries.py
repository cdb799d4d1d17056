"""Retry rules, shared by steps and compensations: may a failed attempt be tried again, and
how the next attempt is sent (at once, or after a durable retry timer)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.engine.vocabulary import (
    Failure,
    FailureType,
    HistoryEventType,
    Phase,
    StepStatus,
    TimerKind,
)

if TYPE_CHECKING:
    from orchestrator.definitions import RetryPolicy
    from orchestrator.engine.draft import Draft


def may_retry(policy: RetryPolicy, attempt: int, failure: Failure, elapsed: float) -> bool:
    """`attempt` attempts made, the first `elapsed` seconds ago: is another one allowed?"""
    if not failure.retryable or failure.type in policy.non_retryable_errors:
        return False
    if attempt >= policy.max_attempts:
        return False
    budget = policy.max_elapsed_seconds
    return budget is None or elapsed + policy.delay_before(attempt + 1) <= budget


def retry(
    draft: Draft, key: str, phase: Phase, attempt: int, failure: Failure, policy: RetryPolicy
) -> None:
    """Attempt `attempt` of step `key` failed and may be retried: send the next one, now or
    on a timer."""
    delay = policy.delay_before(attempt + 1, salt=f"{draft.instance.id}:{key}:{phase}")
    draft.record(
        HistoryEventType.ATTEMPT_FAILED,
        step=key,
        phase=phase,
        attempt=attempt,
        failure=failure,
        retry_in_seconds=delay,
    )
    if delay <= 0:
        draft.dispatch(draft.definition.step(key), phase, attempt + 1, key)
        return
    if phase is Phase.FORWARD:  # remembered: a cancel now must know how this attempt ended
        draft.set_step(key, status=StepStatus.RETRY_WAIT, error=failure)
    else:
        draft.set_step(key, status=StepStatus.COMPENSATION_RETRY_WAIT, compensation_error=failure)
    draft.schedule(TimerKind.RETRY, key, phase, attempt, delay)


def abandoned() -> Failure:
    """Why a step waiting for its retry is not tried again."""
    return Failure(type=FailureType.ABANDONED, message="the saga is compensating", retryable=False)
