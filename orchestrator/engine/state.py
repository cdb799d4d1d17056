"""The engine's values: instance snapshot, inputs (events) and outputs (transition).

The words they are made of (statuses, phases, event types) are in `vocabulary`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid5

import msgspec

from orchestrator.definitions import ChildSaga, Map, Step
from orchestrator.definitions.model import children_of
from orchestrator.engine.vocabulary import (
    Failure,
    HistoryEventType,
    NodeStatus,
    Phase,
    SagaStatus,
    StepStatus,
    TimerKind,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from orchestrator.definitions import Node


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
    dispatch_seq: int = 0
    """The history seq of the current forward attempt's dispatch, which its reply carries
    back (0: dispatched before Warren kept it: not checked)."""
    compensation_dispatch_seq: int = 0
    """The same for the current compensation attempt."""


class NodeState(msgspec.Struct, frozen=True, kw_only=True):
    """A parallel's, a choice's or a map's progress (a step's and a child saga's is a
    `StepState`). Keyed like steps: by name, prefixed ``map[i]/`` inside a map's item."""

    status: NodeStatus = NodeStatus.RUNNING
    case: str | None = None
    """The case a choice took (``default`` for its default)."""
    items: list[Any] | None = None
    """The items a map runs over, as found when it started."""
    started: int = 0
    """Branches or items started so far (in order: a concurrency limit starts the next)."""
    received: Any = None
    """What satisfied a wait: the event (or the signal), as its result."""
    timed_out: bool = False
    """A wait that timed out (its `on_timeout` nodes run, if it has them)."""


class ParentLink(msgspec.Struct, frozen=True, kw_only=True):
    """A child saga's parent: the node that started it, and the order it answers (the start,
    or later the parent's request to undo it)."""

    instance_id: UUID
    saga: str
    saga_version: int
    step: str
    """The parent's key for the child node."""
    command: str
    phase: Phase = Phase.FORWARD
    """`compensate` once the parent asked to undo this child."""
    attempt: int = 1
    seq: int = 0
    """The parent's sequence number of the order, carried back on the reply."""

    @property
    def correlation_id(self) -> UUID:
        return self.instance_id


SNAPSHOT_FORMAT = 2
"""Version of the stored snapshot's shape. 1: linear sagas (no `nodes`, `parent`, `format`);
2: flows. persistence.instances upgrades an older snapshot when it loads one."""


_CHILDREN = UUID("6f1c6a52-9d0e-4f0a-9a51-8f4b1e0c2d7a")
_EMITTED = UUID("0b7f5d9e-3c1a-4e8b-a2f6-5d4c3b2a1908")


def emitted_event_id(instance_id: UUID, seq: int) -> UUID:
    """The id of the event an instance publishes at history event `seq`."""
    return uuid5(_EMITTED, f"{instance_id}/{seq}")


def child_instance_id(parent_id: UUID, key: str) -> UUID:
    """The id of the child saga a parent's node `key` starts: the same however often the
    order is delivered, so the child starts once."""
    return uuid5(_CHILDREN, f"{parent_id}/{key}")


class SnapshotTooNew(ValueError):
    """A snapshot written by a newer Warren: this one would misread it."""


def upgraded(state: InstanceState) -> InstanceState:
    """`state` in the current snapshot format. Format 1 (linear sagas) reads as format 2 with
    no nodes and no parent: its step keys are the step names, as in format 2."""
    if state.format == SNAPSHOT_FORMAT:
        return state
    if state.format > SNAPSHOT_FORMAT:
        raise SnapshotTooNew(
            f"instance {state.id} was stored in snapshot format {state.format}; this Warren "
            f"reads up to {SNAPSHOT_FORMAT}: upgrade it"
        )
    return msgspec.structs.replace(state, format=SNAPSHOT_FORMAT)


class Signal(msgspec.Struct, frozen=True, kw_only=True):
    """A signal sent to an instance: what a `WaitFor(signal=...)` receives as its result."""

    name: str
    id: str
    data: Any = None


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
    nodes: dict[str, NodeState] = {}
    """Parallels, choices and maps under way or done, by key."""
    parent: ParentLink | None = None
    """Set on a child saga's instance."""
    signals: tuple[Signal, ...] = ()
    """Signals sent before a wait for them began, oldest first: the wait takes them."""
    format: int = 1
    """The snapshot's shape (`SNAPSHOT_FORMAT` when written now; absent, so 1, before)."""

    def results(self) -> dict[str, Any]:
        """The results so far, by node name (a wait's: what it received); a map's, once it
        found its items, as a list of its items' results (each by node name), in item order,
        empty for no items; a step inside a map's item only in that list."""
        return gather_results(self.completed, self.steps, self.nodes)


def task_keys(
    nodes: Sequence[Node], prefix: str = "", expanded: dict[str, NodeState] | None = None
) -> list[str]:
    """The keys of the steps and child sagas in `nodes`, in definition order, at any depth;
    inside a map only when `expanded` holds the map's items (then in item order)."""
    keys: list[str] = []
    for node in nodes:
        if isinstance(node, Step | ChildSaga):
            keys.append(prefix + node.name)
        elif isinstance(node, Map):
            found = (expanded or {}).get(prefix + node.name)
            for index in range(len(found.items or ()) if found is not None else 0):
                keys += task_keys(node.steps, f"{prefix}{node.name}[{index}]/", expanded)
        else:
            for _, inner in children_of(node):
                keys += task_keys(inner, prefix, expanded)
    return keys


def gather_results(
    completed: tuple[str, ...], steps: dict[str, StepState], nodes: dict[str, NodeState]
) -> dict[str, Any]:
    if not nodes:  # a linear saga
        return {name: steps[name].result for name in completed}
    out: dict[str, Any] = {}
    for key in completed:
        *items, name = key.split("/")
        _item_results(out, items, nodes)[name] = steps[key].result
    for key, node in nodes.items():
        if node.items is not None:  # a map that found its items has its list, even empty
            *items, name = key.split("/")
            _item_results(out, items, nodes).setdefault(name, [{} for _ in node.items])
        elif node.received is not None:  # a wait that received its event or signal
            *items, name = key.split("/")
            _item_results(out, items, nodes)[name] = node.received
    return out


def _item_results(
    out: dict[str, Any], items: list[str], nodes: dict[str, NodeState]
) -> dict[str, Any]:
    """The results of the map item a key's prefix names (``seats[1]``…), made as needed;
    `out` itself for a key at the top."""
    here, prefix = out, ""
    for item in items:
        map_name, index = item[:-1].split("[")
        node = nodes.get(prefix + map_name)
        size = len(node.items or ()) if node is not None else int(index) + 1
        gathered = here.setdefault(map_name, [{} for _ in range(size)])
        here = gathered[int(index)]
        prefix += item + "/"
    return here


# ---- inputs ---------------------------------------------------------------------------------
# Tagged (``{"event": "step_reply", ...}``) so that an `Event` encodes and decodes as JSON: the
# history keeps the one that caused each transition, and replay decides it again.


class Start(msgspec.Struct, frozen=True, kw_only=True, tag_field="event", tag="start"):
    input: Any


class StepReply(msgspec.Struct, frozen=True, kw_only=True, tag_field="event", tag="step_reply"):
    step: str
    phase: Phase
    attempt: int
    ok: bool
    result: Any = None
    failure: Failure | None = None
    seq: int | None = None
    """The seq of the dispatch it answers, from the reply's envelope (None: not checked)."""


class TimerFired(msgspec.Struct, frozen=True, kw_only=True, tag_field="event", tag="timer_fired"):
    kind: TimerKind
    step: str
    phase: Phase
    attempt: int


class Cancel(msgspec.Struct, frozen=True, kw_only=True, tag_field="event", tag="cancel"):
    """An operator (or client) asks to stop: no new forward steps, undo what was done."""

    reason: str = "cancelled by request"


class Resume(msgspec.Struct, frozen=True, kw_only=True, tag_field="event", tag="resume"):
    """An operator retries a `failed` instance: its stuck compensation runs again."""


class Undo(msgspec.Struct, frozen=True, kw_only=True, tag_field="event", tag="undo"):
    """A child saga's parent compensates the node that ran it: undo the child (its attempt
    and seq are the parent's compensation order's, answered when the child is undone)."""

    attempt: int
    seq: int


class EventReceived(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="event", tag="event_received"
):
    """An event the shell matched to the wait `wait` of this instance (its type, and its
    correlation value, are the wait's)."""

    wait: str
    received: dict[str, Any]
    """The event as the wait's result: ``id``, ``source``, ``type``, ``subject``, ``time``,
    ``data``."""


class SignalReceived(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="event", tag="signal_received"
):
    """A signal sent to this instance (the shell dropped copies with the same id)."""

    signal: Signal


Event = Start | StepReply | TimerFired | Cancel | Resume | Undo | EventReceived | SignalReceived


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
    input: Any = msgspec.UNSET
    """What the command carries as input when not the saga's (a map's item, an input map)."""
    with_results: bool = True
    """False when the step maps its input: the command then carries no results."""


class ScheduleTimer(msgspec.Struct, frozen=True, kw_only=True):
    kind: TimerKind
    step: str
    phase: Phase
    attempt: int
    due_at: datetime


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    """A wait that began: events of `event_type` whose value at `path` (None: any) equals
    `value` are for the wait `key`. The shell stores it, and looks for such an event that
    arrived before."""

    key: str
    event_type: str
    path: str | None
    value: Any = None


class Emitted(msgspec.Struct, frozen=True, kw_only=True):
    """A domain event to publish (the shell adds the CloudEvents attributes)."""

    id: UUID
    """Derived from the instance and the history event that records it: the same on replay."""
    type: str
    data: Any
    dataversion: int = 1


class ParentReply(msgspec.Struct, frozen=True, kw_only=True):
    """A child saga ended (or was undone): the reply its parent's node waits for."""

    parent: ParentLink
    ok: bool
    result: Any = None
    failure: Failure | None = None


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    instance: InstanceState
    history: tuple[HistoryEvent, ...] = ()
    dispatches: tuple[Dispatch, ...] = ()
    timers: tuple[ScheduleTimer, ...] = ()
    parent_reply: ParentReply | None = None
    subscriptions: tuple[Subscription, ...] = ()
    """Event waits that began."""
    waits_ended: tuple[str, ...] = ()
    """Keys of event waits that are over (satisfied, timed out, abandoned)."""
    events: tuple[Emitted, ...] = ()
