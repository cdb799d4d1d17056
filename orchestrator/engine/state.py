"""The engine's values: instance snapshot, inputs (events) and outputs (transition).

The words they are made of (statuses, phases, event types) are in `vocabulary`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from orchestrator.engine.vocabulary import (
    Failure,
    HistoryEventType,
    Phase,
    SagaStatus,
    StepStatus,
    TimerKind,
)


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
    type: HistoryEventType
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
