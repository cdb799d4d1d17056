"""The four timer kinds: a step's delay, an attempt's retry and timeout, the saga's deadline.

A timer of an attempt that is over (answered, retried, abandoned) does nothing: each handler
checks that the attempt it names is still the one in flight.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from orchestrator.definitions import WaitFor
from orchestrator.engine import compensation, forward, operations, waits
from orchestrator.engine.retries import abandoned
from orchestrator.engine.vocabulary import (
    Failure,
    FailureType,
    HistoryEventType,
    Phase,
    SagaStatus,
    StepStatus,
    TimerKind,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from orchestrator.engine.draft import Draft
    from orchestrator.engine.state import TimerFired


def on_timer(draft: Draft, timer: TimerFired) -> None:
    _ON_KIND[timer.kind](draft, timer)


def on_deadline(draft: Draft, timer: TimerFired) -> None:
    seconds = draft.definition.deadline_seconds
    if draft.instance.status is not SagaStatus.RUNNING or seconds is None:
        return
    draft.record(HistoryEventType.SAGA_DEADLINE_EXCEEDED, deadline_seconds=seconds)
    message = f"still running {seconds} s after it started"
    operations.stop_forward(
        draft, Failure(type=FailureType.DEADLINE_EXCEEDED, message=message, retryable=False)
    )


def on_delay(draft: Draft, timer: TimerFired) -> None:
    """A delayed step may start, unless the saga stopped meanwhile."""
    state = draft.steps.get(timer.step)
    if state is None:
        return
    if state.status is StepStatus.SCHEDULED and draft.instance.status is SagaStatus.RUNNING:
        draft.dispatch(draft.definition.step(timer.step), Phase.FORWARD, 1, timer.step)


def on_retry(draft: Draft, timer: TimerFired) -> None:
    state = draft.steps.get(timer.step)
    if state is None or _attempt_of(draft, timer) != timer.attempt:
        return  # a timer of an attempt that is over: nothing to do
    step = draft.definition.step(timer.step)
    if timer.phase is Phase.FORWARD and state.status is StepStatus.RETRY_WAIT:
        if draft.instance.status is SagaStatus.RUNNING:
            draft.dispatch(step, Phase.FORWARD, timer.attempt + 1, timer.step)
        else:  # the saga is being undone: this step will not be tried again
            forward.attempt_failed(draft, timer.step, timer.attempt, state.error or abandoned())
    elif timer.phase is Phase.COMPENSATE and state.status is StepStatus.COMPENSATION_RETRY_WAIT:
        draft.dispatch(step, Phase.COMPENSATE, timer.attempt + 1, timer.step)


def on_timeout(draft: Draft, timer: TimerFired) -> None:
    """The attempt in flight took too long: it counts as a failed, retryable attempt (a
    wait's timeout is the wait's to handle)."""
    if isinstance(draft.definition.find(timer.step), WaitFor):
        waits.on_timeout(draft, timer)
        return
    state = draft.steps.get(timer.step)
    if state is None or _attempt_of(draft, timer) != timer.attempt:
        return  # a timer of an attempt that is over: nothing to do
    key, attempt = timer.step, timer.attempt
    timeout = Failure(
        type=FailureType.STEP_TIMEOUT,
        message=f"attempt {attempt} did not reply in time",
        retryable=True,
    )
    if timer.phase is Phase.FORWARD and state.status is StepStatus.RUNNING:
        draft.record(
            HistoryEventType.ATTEMPT_TIMED_OUT, step=key, phase=timer.phase, attempt=attempt
        )
        forward.attempt_failed(draft, key, attempt, timeout)
    elif timer.phase is Phase.COMPENSATE and state.status is StepStatus.COMPENSATING:
        draft.record(
            HistoryEventType.ATTEMPT_TIMED_OUT, step=key, phase=timer.phase, attempt=attempt
        )
        compensation.attempt_failed(draft, key, attempt, timeout)


def _attempt_of(draft: Draft, timer: TimerFired) -> int:
    """The attempt of the timer's step phase that is current now."""
    state = draft.steps[timer.step]
    return state.attempt if timer.phase is Phase.FORWARD else state.compensation_attempt


_ON_KIND: Final[Mapping[TimerKind, Callable[[Draft, TimerFired], None]]] = {
    TimerKind.DEADLINE: on_deadline,
    TimerKind.DELAY: on_delay,
    TimerKind.RETRY: on_retry,
    TimerKind.TIMEOUT: on_timeout,
}
"""What each timer kind does: a new kind joins with its handler and one row here."""
