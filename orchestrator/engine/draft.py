"""The draft of one transition: what every handler builds on (history, commands, timers).

A `Draft` is local and mutable while `decide` runs and is frozen into a `Transition` at the
end; the handlers in `forward`, `compensation`, `operations` and `timers` change it only through
these methods, so sequence numbers, pools and timestamps are set in one place.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from orchestrator.engine.state import (
    Dispatch,
    HistoryEvent,
    InstanceState,
    ScheduleTimer,
    StepReply,
    Transition,
)
from orchestrator.engine.vocabulary import (
    STATUS_ENTERED,
    Failure,
    FailureType,
    HistoryEventType,
    Phase,
    SagaStatus,
    StepStatus,
    TimerKind,
)

if TYPE_CHECKING:
    from orchestrator.definitions import Saga, Step

replace = msgspec.structs.replace


class Draft:
    """Accumulates one transition of `instance` under `definition` at `now`."""

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
        type: HistoryEventType,
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
        self.record(STATUS_ENTERED[status], **data)

    def ignore(self, reply: StepReply) -> None:
        """A duplicate, late or stale reply: recorded for operators, otherwise without effect."""
        self.record(
            HistoryEventType.REPLY_IGNORED,
            step=reply.step,
            phase=reply.phase,
            attempt=reply.attempt,
            ok=reply.ok,
        )

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

    # ---- commands and timers ----------------------------------------------------------------

    def dispatch(self, step: Step, phase: Phase, attempt: int) -> None:
        if phase is Phase.FORWARD:
            command, pool, timeout = step.command_name, step.pool, step.timeout_seconds
            started = self.steps[step.name].started_at or self.now
            self.set_step(step.name, status=StepStatus.RUNNING, attempt=attempt, started_at=started)
            kind = HistoryEventType.STEP_DISPATCHED
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
            kind = HistoryEventType.COMPENSATION_DISPATCHED
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


def failure_of(reply: StepReply) -> Failure:
    """The reply's failure; a failure reply without one counts as a retryable unknown."""
    return reply.failure or Failure(
        type=FailureType.UNKNOWN_FAILURE, message="no failure given", retryable=True
    )
