"""The words every layer shares: phases, statuses, history event types and failures.

The engine owns them; the wire format (`orchestrator.messaging`), the store, the service and
the API import them from here, never the reverse. Every enum is a `StrEnum` whose values are
what is stored in Postgres and sent on the wire: renaming a member is free, changing a value
is a migration.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Final

import msgspec

if TYPE_CHECKING:
    from collections.abc import Mapping


class Phase(StrEnum):
    """Which command of a step a message or an event is about."""

    FORWARD = "forward"
    """The step's own command."""
    COMPENSATE = "compensate"
    """The command that undoes it."""


class SagaStatus(StrEnum):
    """Where an instance (one run of a saga) stands."""

    RUNNING = "running"
    """Forward steps are being run."""
    COMPLETED = "completed"
    """Every step succeeded. Terminal."""
    COMPENSATING = "compensating"
    """A step failed for good; completed steps are being undone in reverse order."""
    COMPENSATED = "compensated"
    """Every needed compensation succeeded. Terminal."""
    FAILED = "failed"
    """A compensation could not be completed; an operator must act."""

    @property
    def terminal(self) -> bool:
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED)


class StepStatus(StrEnum):
    """Where one step of an instance stands, forward and compensation."""

    PENDING = "pending"
    """Not started yet."""
    SKIPPED = "skipped"
    """In a case its choice did not take: it never runs."""
    SCHEDULED = "scheduled"
    """Next, but waiting for its delay: no command is out yet."""
    RUNNING = "running"
    """An attempt's command is out; waiting for its reply (or its timeout)."""
    RETRY_WAIT = "retry_wait"
    """An attempt failed; a durable timer will dispatch the next one."""
    SUCCEEDED = "succeeded"
    """Its command succeeded: it is among the completed steps, to undo if the saga fails."""
    FAILED = "failed"
    """Failed for good (no attempts left, or a business failure)."""
    COMPENSATING = "compensating"
    """Its compensation's command is out."""
    COMPENSATION_RETRY_WAIT = "compensation_retry_wait"
    """A compensation attempt failed; a durable timer will dispatch the next one."""
    COMPENSATED = "compensated"
    """Its compensation succeeded: its effect is undone."""
    COMPENSATION_FAILED = "compensation_failed"
    """Its compensation ran out of attempts: the saga is `failed` until an operator resumes."""


class NodeStatus(StrEnum):
    """Where a parallel, a choice, a map or a wait stands."""

    RUNNING = "running"
    """Started: its branches, case or items are under way; a wait waits."""
    SUCCEEDED = "succeeded"
    """Every branch, the case taken, or every item succeeded."""
    FAILED = "failed"
    """It could not go on (no case held, the items were not a list or too many)."""


class TimerKind(StrEnum):
    """What a durable timer does when it fires."""

    RETRY = "retry"
    """Dispatch the next attempt."""
    TIMEOUT = "timeout"
    """The attempt took too long; count it as failed."""
    DELAY = "delay"
    """A delayed step may start now."""
    DEADLINE = "deadline"
    """The saga's deadline passed: stop and compensate if it is still running."""


class HistoryEventType(StrEnum):
    """The type of one history event (`warren.history.type`), in the order a run meets them."""

    SAGA_STARTED = "saga_started"
    """The instance began; its data holds the definition's version."""
    STEP_SCHEDULED = "step_scheduled"
    """A delayed step is next; a timer will dispatch it."""
    STEP_DISPATCHED = "step_dispatched"
    """An attempt's command was sent to the step's pool."""
    ATTEMPT_TIMED_OUT = "attempt_timed_out"
    """An attempt did not reply in time; followed by how that failure was handled."""
    ATTEMPT_FAILED = "attempt_failed"
    """An attempt failed and another one follows (now or after a retry timer)."""
    STEP_SUCCEEDED = "step_succeeded"
    """The step's command succeeded."""
    STEP_SUCCEEDED_LATE = "step_succeeded_late"
    """A step counted as failed (it timed out) did succeed after all: it is undone too."""
    STEP_FAILED = "step_failed"
    """The step failed for good: no attempt left, a business failure, or abandoned."""
    BRANCHES_STARTED = "branches_started"
    """A parallel began; its data holds how many branches it has."""
    CASE_CHOSEN = "case_chosen"
    """A choice took a case; its data holds which, and the condition that held."""
    ITEMS_FOUND = "items_found"
    """A map began; its data holds how many items it runs over."""
    NODE_SUCCEEDED = "node_succeeded"
    """Every branch of a parallel, the case a choice took, or every item of a map succeeded."""
    NODE_FAILED = "node_failed"
    """A choice found no case, or a map's items were not a list (or too many): it fails."""
    WAIT_STARTED = "wait_started"
    """A wait began; its data holds the event type (and correlation) or the signal name."""
    EVENT_RECEIVED = "event_received"
    """The event a wait waited for arrived; its data holds the event."""
    SIGNAL_RECEIVED = "signal_received"
    """A signal arrived: for a wait (`step` names it), or kept until a wait for it begins."""
    WAIT_TIMED_OUT = "wait_timed_out"
    """A wait's timeout passed first: its on_timeout nodes run, or it fails."""
    EVENT_IGNORED = "event_ignored"
    """An event or signal for a wait that is over, or for an instance that ended."""
    EVENT_EMITTED = "event_emitted"
    """The saga published a domain event; its data holds the event's id, type and data."""
    CHILD_CANCEL_SENT = "child_cancel_sent"
    """The saga stopped going forward while a child saga ran: the child is told to stop."""
    CHILD_UNDO_REQUESTED = "child_undo_requested"
    """This child saga had completed; its parent is compensating and asked to undo it."""
    REPLY_IGNORED = "reply_ignored"
    """A duplicate, late or stray reply: recorded, otherwise without effect."""
    SAGA_CANCEL_REQUESTED = "saga_cancel_requested"
    """An operator or client asked to stop the instance."""
    SAGA_DEADLINE_EXCEEDED = "saga_deadline_exceeded"
    """The saga's deadline passed while it was still running."""
    COMPENSATION_DISPATCHED = "compensation_dispatched"
    """A compensation attempt's command was sent to its pool."""
    COMPENSATION_SUCCEEDED = "compensation_succeeded"
    """The step's effect is undone."""
    COMPENSATION_FAILED = "compensation_failed"
    """The compensation ran out of attempts (or failed for good)."""
    SAGA_RESUMED = "saga_resumed"
    """An operator resumed a `failed` instance: its stuck compensation runs again."""
    SAGA_COMPLETED = "saga_completed"
    """The instance entered `completed`."""
    SAGA_COMPENSATING = "saga_compensating"
    """The instance entered `compensating`."""
    SAGA_COMPENSATED = "saga_compensated"
    """The instance entered `compensated`."""
    SAGA_FAILED = "saga_failed"
    """The instance entered `failed`."""


STATUS_ENTERED: Final[Mapping[SagaStatus, HistoryEventType]] = {
    SagaStatus.COMPLETED: HistoryEventType.SAGA_COMPLETED,
    SagaStatus.COMPENSATING: HistoryEventType.SAGA_COMPENSATING,
    SagaStatus.COMPENSATED: HistoryEventType.SAGA_COMPENSATED,
    SagaStatus.FAILED: HistoryEventType.SAGA_FAILED,
}
"""The event recorded when an instance enters a status (it starts `running`)."""

DISPATCH_EVENTS: Final = (
    HistoryEventType.STEP_DISPATCHED,
    HistoryEventType.COMPENSATION_DISPATCHED,
)
"""A command went out: what pool statistics count as calls."""

FAILURE_EVENTS: Final = (
    HistoryEventType.ATTEMPT_FAILED,
    HistoryEventType.STEP_FAILED,
    HistoryEventType.COMPENSATION_FAILED,
)
"""An attempt ended in failure: what circuit breakers and pool statistics count."""

SUCCESS_EVENTS: Final = (
    HistoryEventType.STEP_SUCCEEDED,
    HistoryEventType.COMPENSATION_SUCCEEDED,
    HistoryEventType.STEP_SUCCEEDED_LATE,
)
"""An attempt ended in success: what closes a circuit breaker."""


class FailureType(StrEnum):
    """The failure types Warren reports itself; a handler's own (``InsufficientFunds``) are any
    string, which is why `Failure.type` is a `str`."""

    STEP_FAILED = "StepFailed"
    """A handler raised `StepFailed` without naming a type: a business failure."""
    UNKNOWN_COMMAND = "UnknownCommand"
    """No handler for the command on the worker that received it."""
    UNKNOWN_FAILURE = "UnknownFailure"
    """A failure reply that carried no failure."""
    STEP_TIMEOUT = "StepTimeout"
    """The attempt did not reply within the step's timeout: it may still succeed, late."""
    DEAD_LETTERED = "DeadLettered"
    """The command was dead-lettered: the worker may have run it all the same."""
    ABANDONED = "Abandoned"
    """A step waiting for its retry is not tried again: the saga is compensating."""
    CANCELLED = "Cancelled"
    """An operator or client cancelled the instance."""
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    """The saga ran past its deadline."""
    NO_CASE_MATCHED = "NoCaseMatched"
    """A choice found no case that held, and has no default."""
    INVALID_ITEMS = "InvalidItems"
    """A map's items were not a list, or more than its max_items."""
    CHILD_FAILED = "ChildFailed"
    """A child saga compensated or failed instead of completing."""
    WAIT_TIMED_OUT = "WaitTimedOut"
    """A wait with no on_timeout path received nothing in time."""
    NOTHING_TO_CORRELATE = "NothingToCorrelate"
    """A wait's `equals` path found nothing in the saga's data when the wait began."""


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """Why an attempt failed, as the worker (or a timer) reports it. Failures cross the wire
    as this data, never pickled."""

    type: str
    """The error's type name, e.g. ``InsufficientFunds``, or a `FailureType`."""
    message: str
    retryable: bool
    """False for a business failure (``StepFailed``): the step fails at once."""

    @classmethod
    def from_exception(cls, exc: BaseException, *, retryable: bool) -> Failure:
        return cls(
            type=type(exc).__name__, message=str(exc) or type(exc).__name__, retryable=retryable
        )
