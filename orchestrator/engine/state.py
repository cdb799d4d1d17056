"""The engine's values: instance snapshot, inputs (events) and outputs (transition)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import msgspec

from orchestrator.messaging.envelope import (
    Phase as Phase,
)  # re-exported: part of the engine's vocabulary
from orchestrator.messaging.failure import Failure


class SagaStatus(StrEnum):
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
    PENDING = "pending"
    """Not started yet."""
    SCHEDULED = "scheduled"
    """Next, but waiting for its delay: no command is out yet."""
    RUNNING = "running"
    """An attempt's command is out; waiting for its reply (or its timeout)."""
    RETRY_WAIT = "retry_wait"
    """An attempt failed; a durable timer will dispatch the next one."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """Failed for good (no attempts left, or a business failure)."""
    COMPENSATING = "compensating"
    """Its compensation's command is out."""
    COMPENSATION_RETRY_WAIT = "compensation_retry_wait"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"


class TimerKind(StrEnum):
    RETRY = "retry"
    """Dispatch the next attempt."""
    TIMEOUT = "timeout"
    """The attempt took too long; count it as failed."""
    DELAY = "delay"
    """A delayed step may start now."""
    DEADLINE = "deadline"
    """The saga's deadline passed: stop and compensate if it is still running."""


class StepState(msgspec.Struct, frozen=True, kw_only=True):
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    result: Any = None
    error: Failure | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    compensation_attempt: int = 0
    compensation_error: Failure | None = None
    compensated_at: datetime | None = None
    compensation_started_at: datetime | None = None
    """When its compensation's first attempt (or an operator's resume) was dispatched."""
    compensation_attempts_before_resume: int = 0
    """Compensation attempts made before an operator's last resume: the retry budget restarts."""


class InstanceState(msgspec.Struct, frozen=True, kw_only=True):
    """The snapshot of one saga instance: what the history adds up to."""

    id: UUID
    saga: str
    version: int
    status: SagaStatus
    input: Any
    steps: dict[str, StepState]
    completed: tuple[str, ...] = ()
    """Steps in the order they succeeded: compensation runs it backwards."""
    seq: int = 0
    """Sequence number of the last history event."""
    failure: Failure | None = None
    """Why the saga left the happy path."""
    created_at: datetime
    updated_at: datetime

    def results(self) -> dict[str, Any]:
        return {name: self.steps[name].result for name in self.completed}


# ---- inputs ---------------------------------------------------------------------------------


class Start(msgspec.Struct, frozen=True, kw_only=True):
    input: Any


class StepReply(msgspec.Struct, frozen=True, kw_only=True):
    step: str
    phase: Phase
    attempt: int
    ok: bool
    result: Any = None
    failure: Failure | None = None


class TimerFired(msgspec.Struct, frozen=True, kw_only=True):
    kind: TimerKind
    step: str
    phase: Phase
    attempt: int


class Cancel(msgspec.Struct, frozen=True, kw_only=True):
    """An operator (or client) asks to stop: no new forward steps, undo what was done."""

    reason: str = "cancelled by request"


class Resume(msgspec.Struct, frozen=True, kw_only=True):
    """An operator retries a `failed` instance: its stuck compensation runs again."""


Event = Start | StepReply | TimerFired | Cancel | Resume


# ---- outputs --------------------------------------------------------------------------------


class HistoryEvent(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    type: str
    at: datetime
    step: str | None = None
    phase: Phase | None = None
    attempt: int | None = None
    pool: str | None = None
    """The worker pool of the step phase, for per-pool statistics."""
    data: dict[str, Any] = {}


class Dispatch(msgspec.Struct, frozen=True, kw_only=True):
    """Send `command` to `pool` for one attempt of a step or its compensation."""

    step: str
    phase: Phase
    command: str
    pool: str
    attempt: int
    seq: int


class ScheduleTimer(msgspec.Struct, frozen=True, kw_only=True):
    kind: TimerKind
    step: str
    phase: Phase
    attempt: int
    due_at: datetime


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    instance: InstanceState
    history: tuple[HistoryEvent, ...] = ()
    dispatches: tuple[Dispatch, ...] = ()
    timers: tuple[ScheduleTimer, ...] = ()
