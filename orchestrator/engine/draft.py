"""The draft of one transition: what every handler builds on (history, commands, timers).

A `Draft` is local and mutable while `decide` runs and is frozen into a `Transition` at the
end; the handlers in `forward`, `compensation`, `operations` and `timers` change it only through
these methods, so sequence numbers, pools and timestamps are set in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from orchestrator.definitions.conditions import map_input
from orchestrator.definitions.model import CANCEL_CHILD_COMMAND, CHILD_POOL
from orchestrator.engine.state import (
    Dispatch,
    Emitted,
    HistoryEvent,
    InstanceState,
    NodeState,
    ParentReply,
    ScheduleTimer,
    StepReply,
    Subscription,
    Transition,
    emitted_event_id,
    gather_results,
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
    from collections.abc import Sequence

    from orchestrator.definitions import Emit, Saga, Task

replace = msgspec.structs.replace


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a node runs: at the top (`ROOT`) or inside a map's item, whose keys it prefixes
    (``seats[1]/``) and whose item and index paths may read."""

    prefix: str = ""
    item: Any = msgspec.UNSET
    index: int | None = None

    def key(self, name: str) -> str:
        return self.prefix + name

    def inside(self, map_key: str, index: int, item: Any) -> Scope:
        return Scope(prefix=f"{map_key}[{index}]/", item=item, index=index)


ROOT = Scope()


class Draft:
    """Accumulates one transition of `instance` under `definition` at `now`."""

    def __init__(self, definition: Saga, instance: InstanceState, now: datetime) -> None:
        self.definition = definition
        self.instance = instance
        self.steps = dict(instance.steps)
        self.nodes = dict(instance.nodes)
        self.now = now
        self.history: list[HistoryEvent] = []
        self.dispatches: list[Dispatch] = []
        self.timers: list[ScheduleTimer] = []
        self.parent_reply: ParentReply | None = None
        self.subscriptions: list[Subscription] = []
        self.waits_ended: list[str] = []
        self.events: list[Emitted] = []

    # ---- bookkeeping ------------------------------------------------------------------------

    def record(
        self,
        type: HistoryEventType,
        /,
        *,
        step: str | None = None,
        phase: Phase | None = None,
        attempt: int | None = None,
        **data: Any,
    ) -> int:
        seq = self.next_seq()
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

    def next_seq(self) -> int:
        """The sequence number the next history event gets."""
        return self.instance.seq + len(self.history) + 1

    def elapsed(self, since: datetime | None) -> float:
        return (self.now - since).total_seconds() if since is not None else 0.0

    def pool_of(self, step: str | None, phase: Phase | None) -> str | None:
        """The pool a step phase runs on; None when the definition has no such step phase
        (a stray reply names whatever it likes, a parallel or a map has none)."""
        if step is None or phase is None:
            return None
        return self.definition.pool_of(step, forward=phase is Phase.FORWARD)

    def set_step(self, name: str, **changes: Any) -> None:
        self.steps[name] = replace(self.steps[name], **changes)

    def set_node(self, key: str, **changes: Any) -> None:
        self.nodes[key] = replace(self.nodes.get(key) or NodeState(), **changes)

    # ---- the data paths read -----------------------------------------------------------------

    def results(self) -> dict[str, Any]:
        return gather_results(self.instance.completed, self.steps, self.nodes)

    def data(self, scope: Scope) -> dict[str, Any]:
        """What a path reads at `scope`: the input, the results so far, a map's item."""
        received = {k: n.received for k, n in self.nodes.items() if n.received is not None}
        data = {"input": self.instance.input, "results": self.results(), "events": received}
        if scope.index is not None:
            data |= {"item": scope.item, "index": scope.index}
        return data

    def scope_of(self, key: str) -> Scope:
        """The scope a step key was started in (from its ``map[i]/`` prefixes)."""
        scope = ROOT
        *items, _ = key.split("/")
        for part in items:
            map_name, index = part[:-1].split("[")
            map_key = scope.key(map_name)
            node = self.nodes[map_key]
            scope = scope.inside(map_key, int(index), (node.items or [])[int(index)])
        return scope

    def set_saga(self, status: SagaStatus, failure: Failure | None = None) -> None:
        changes: dict[str, Any] = {"status": status}
        if failure is not None and self.instance.failure is None:
            changes["failure"] = failure  # the first cause stays; later ones are in the history
        self.instance = replace(self.instance, **changes)
        data: dict[str, Any] = {"failure": failure} if failure else {}
        self.record(STATUS_ENTERED[status], **data)
        if status.terminal:
            self.emit([e for e in self.definition.emits if e.on == status.value], ROOT)
        if status.terminal and self.instance.parent is not None:
            self.answer_parent(status)

    def emit(self, emits: Sequence[Emit], scope: Scope, *, key: str | None = None) -> None:
        """Publish `emits`, their data read at `scope` (after node `key` succeeded)."""
        for emit in emits:
            data = map_input(self.data(scope), emit.data)
            event_id = emitted_event_id(self.instance.id, self.next_seq())
            self.record(
                HistoryEventType.EVENT_EMITTED,
                step=key,
                id=str(event_id),
                type=emit.type,
                data=data,
            )
            self.events.append(
                Emitted(id=event_id, type=emit.type, data=data, dataversion=emit.dataversion)
            )

    def answer_parent(self, status: SagaStatus) -> None:
        """A child saga ended: tell the parent's node how (its undo, once it asked for it)."""
        parent = self.instance.parent
        assert parent is not None
        undoing = parent.phase is Phase.COMPENSATE
        if status is SagaStatus.COMPLETED or (undoing and status is SagaStatus.COMPENSATED):
            result = self.results() if not undoing else None
            self.parent_reply = ParentReply(parent=parent, ok=True, result=result)
            return
        cause = self.instance.failure
        because = f": {cause.type}: {cause.message}" if cause is not None else ""
        failure = Failure(
            type=FailureType.CHILD_FAILED,
            message=f"child saga {self.instance.saga} {self.instance.id} ended "
            f"{status.value}{because}",
            retryable=False,
        )
        self.parent_reply = ParentReply(parent=parent, ok=False, failure=failure)

    def ignore(self, reply: StepReply, reason: str | None = None) -> None:
        """A duplicate, late or stale reply: recorded for operators, otherwise without effect
        (with why, when it is not just a duplicate or a late one)."""
        data: dict[str, Any] = {"ok": reply.ok}
        if reason is not None:
            data |= {"reason": reason, "seq": reply.seq}
        self.record(
            HistoryEventType.REPLY_IGNORED,
            step=reply.step,
            phase=reply.phase,
            attempt=reply.attempt,
            **data,
        )

    def transition(self) -> Transition:
        if not self.history:
            return Transition(instance=self.instance)
        instance = replace(
            self.instance,
            steps=self.steps,
            nodes=self.nodes,
            seq=self.history[-1].seq,
            updated_at=self.now,
        )
        return Transition(
            instance=instance,
            history=tuple(self.history),
            dispatches=tuple(self.dispatches),
            timers=tuple(self.timers),
            parent_reply=self.parent_reply,
            subscriptions=tuple(self.subscriptions),
            waits_ended=tuple(self.waits_ended),
            events=tuple(self.events),
        )

    # ---- commands and timers ----------------------------------------------------------------

    def dispatch(self, step: Task, phase: Phase, attempt: int, key: str | None = None) -> None:
        """Send one attempt of `key` (a step, or a step in a map's item: `step`'s name
        prefixed); `key` is the step's name when not given."""
        key = key or step.name
        if phase is Phase.FORWARD:
            command, pool, timeout = step.command_name, step.pool, step.timeout_seconds
            started = self.steps[key].started_at or self.now
            self.set_step(key, status=StepStatus.RUNNING, attempt=attempt, started_at=started)
            kind = HistoryEventType.STEP_DISPATCHED
        else:
            assert step.compensation is not None
            command, pool = step.compensation.command, step.compensation_pool
            timeout = step.compensation.timeout_seconds
            began = self.steps[key].compensation_started_at
            if attempt == 1 or began is None:
                began = self.now
            self.set_step(
                key,
                status=StepStatus.COMPENSATING,
                compensation_attempt=attempt,
                compensation_started_at=began,
            )
            kind = HistoryEventType.COMPENSATION_DISPATCHED
        seq = self.record(kind, step=key, phase=phase, attempt=attempt, command=command)
        # Its reply carries this seq back: `ordering` checks it.
        sent = "dispatch_seq" if phase is Phase.FORWARD else "compensation_dispatch_seq"
        self.set_step(key, **{sent: seq})
        dispatch = Dispatch(
            step=key, phase=phase, command=command, pool=pool, attempt=attempt, seq=seq
        )
        self.dispatches.append(self._with_input(dispatch, step, key, phase))
        if timeout is not None:
            self.schedule(TimerKind.TIMEOUT, key, phase, attempt, timeout)

    def cancel_child(self, key: str, attempt: int) -> None:
        """Tell the child saga running as `key` to stop (its parent stops going forward)."""
        seq = self.record(
            HistoryEventType.CHILD_CANCEL_SENT, step=key, phase=Phase.FORWARD, attempt=attempt
        )
        self.dispatches.append(
            Dispatch(
                step=key,
                phase=Phase.FORWARD,
                command=CANCEL_CHILD_COMMAND,
                pool=CHILD_POOL,
                attempt=attempt,
                seq=seq,
            )
        )

    def _with_input(self, dispatch: Dispatch, step: Task, key: str, phase: Phase) -> Dispatch:
        """A linear saga's command carries the saga's input and all results (the shell adds
        them); a mapped input replaces both (a compensation still gets its step's result);
        inside a map, the item replaces the input."""
        if step.input_map is None and "/" not in key:
            return dispatch
        scope = self.scope_of(key)
        if step.input_map is None:
            return replace(dispatch, input=scope.item)
        mapped = map_input(self.data(scope), step.input_map)
        if phase is Phase.COMPENSATE:
            mapped = {**mapped, "result": self.steps[key].result}
        return replace(dispatch, input=mapped, with_results=False)

    def schedule(self, kind: TimerKind, key: str, phase: Phase, attempt: int, delay: float) -> None:
        """A durable timer of step `key`; `key` is "" for the saga's own (its deadline)."""
        due = self.now + timedelta(seconds=delay)
        self.timers.append(
            ScheduleTimer(kind=kind, step=key, phase=phase, attempt=attempt, due_at=due)
        )


def failure_of(reply: StepReply) -> Failure:
    """The reply's failure; a failure reply without one counts as a retryable unknown."""
    return reply.failure or Failure(
        type=FailureType.UNKNOWN_FAILURE, message="no failure given", retryable=True
    )
