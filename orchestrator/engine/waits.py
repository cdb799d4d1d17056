"""Waits: a branch pauses until an event or a signal arrives, or its timeout passes.

A wait for an event begins by working out the value its correlation must equal (from the
saga's data, now) and hands the shell a `Subscription`; the shell stores it, matches arriving
events to it, and also looks for a matching event that arrived earlier (kept for a while).
A wait for a signal needs no shell: a signal sent before its wait began is kept in the
snapshot, and the wait takes the oldest one when it begins. What arrived is the wait's result.

On timeout the wait runs its `on_timeout` nodes and the saga goes on, or, without them, fails
and the saga compensates. A wait that is over ignores what arrives for it (and says so in the
history).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.definitions import WaitFor
from orchestrator.definitions.conditions import MISSING, resolve
from orchestrator.engine import walk
from orchestrator.engine.draft import replace
from orchestrator.engine.state import NodeState, Subscription, task_keys
from orchestrator.engine.vocabulary import (
    Failure,
    FailureType,
    HistoryEventType,
    NodeStatus,
    Phase,
    SagaStatus,
    StepStatus,
    TimerKind,
)

if TYPE_CHECKING:
    from orchestrator.engine.draft import Draft, Scope
    from orchestrator.engine.state import EventReceived, Signal, SignalReceived, TimerFired


def run(draft: Draft, node: WaitFor, scope: Scope) -> bool:
    key = scope.key(node.name)
    state = draft.nodes.get(key)
    if state is None:
        if not walk.running(draft):
            return False
        _begin(draft, node, scope, key)
        state = draft.nodes[key]
    if state.status is NodeStatus.SUCCEEDED:
        return True
    if state.status is NodeStatus.RUNNING and state.timed_out:
        on_timeout = node.on_timeout or ()
        if walk.run_sequence(draft, on_timeout, scope) and walk.running(draft):
            walk.succeed_node(draft, key)
            return True
    return False


def _begin(draft: Draft, node: WaitFor, scope: Scope, key: str) -> None:
    if node.signal is not None:
        draft.nodes[key] = NodeState()
        draft.record(HistoryEventType.WAIT_STARTED, step=key, signal=node.signal)
        kept = next((s for s in draft.instance.signals if s.name == node.signal), None)
        if kept is not None:  # sent before the wait began: taken now, oldest first
            rest = tuple(s for s in draft.instance.signals if s is not kept)
            draft.instance = replace(draft.instance, signals=rest)
            _satisfy(draft, node, scope, key, _signal_result(kept))
            return
    else:
        assert node.event is not None
        value: Any = None
        if node.equals is not None:
            value = resolve(draft.data(scope), node.equals)
            if value is MISSING:
                draft.nodes[key] = NodeState(status=NodeStatus.FAILED)
                message = f"wait {node.name!r}: {node.equals} found nothing to correlate with"
                walk.fail_node(
                    draft,
                    key,
                    Failure(
                        type=FailureType.NOTHING_TO_CORRELATE, message=message, retryable=False
                    ),
                )
                return
        draft.nodes[key] = NodeState()
        draft.record(
            HistoryEventType.WAIT_STARTED,
            step=key,
            event=node.event,
            correlate=node.correlate,
            value=value,
        )
        draft.subscriptions.append(
            Subscription(key=key, event_type=node.event, path=node.correlate, value=value)
        )
    if node.timeout_seconds is not None:
        draft.schedule(TimerKind.TIMEOUT, key, Phase.FORWARD, 1, node.timeout_seconds)


def on_event(draft: Draft, received: EventReceived) -> None:
    """An event the shell matched to one of this instance's waits."""
    node = draft.definition.find(received.wait)
    if not isinstance(node, WaitFor) or not _waiting(draft, received.wait):
        draft.record(
            HistoryEventType.EVENT_IGNORED,
            step=received.wait,
            id=received.received.get("id"),
            type=received.received.get("type"),
            reason="no wait for it is under way",
        )
        return
    _satisfy(draft, node, draft.scope_of(received.wait), received.wait, received.received)
    walk.advance(draft)


def on_signal(draft: Draft, received: SignalReceived) -> None:
    """A signal: to the oldest wait for it under way, else kept for a later wait."""
    signal = received.signal
    if draft.instance.status is not SagaStatus.RUNNING:
        draft.record(
            HistoryEventType.EVENT_IGNORED,
            signal=signal.name,
            id=signal.id,
            reason=f"the instance is {draft.instance.status.value}",
        )
        return
    for key in list(draft.nodes):
        node = draft.definition.find(key)
        if isinstance(node, WaitFor) and node.signal == signal.name and _waiting(draft, key):
            _satisfy(draft, node, draft.scope_of(key), key, _signal_result(signal))
            walk.advance(draft)
            return
    draft.instance = replace(draft.instance, signals=(*draft.instance.signals, signal))
    draft.record(
        HistoryEventType.SIGNAL_RECEIVED, signal=signal.name, id=signal.id, data=signal.data
    )


def on_timeout(draft: Draft, timer: TimerFired) -> None:
    """The wait's timeout passed before anything arrived."""
    key = timer.step
    node = draft.definition.find(key)
    if not isinstance(node, WaitFor) or node.timeout_seconds is None or not _waiting(draft, key):
        return  # satisfied or abandoned already (or no timeout of its own): nothing to do
    draft.set_node(key, timed_out=True)
    draft.record(HistoryEventType.WAIT_TIMED_OUT, step=key, timeout_seconds=node.timeout_seconds)
    if node.event is not None:
        draft.waits_ended.append(key)
    if node.on_timeout is None:
        what = f"event {node.event!r}" if node.event is not None else f"signal {node.signal!r}"
        draft.set_node(key, status=NodeStatus.FAILED)
        message = f"wait {node.name!r}: no {what} within {node.timeout_seconds:g} s"
        walk.fail_node(
            draft, key, Failure(type=FailureType.WAIT_TIMED_OUT, message=message, retryable=False)
        )
        return
    walk.advance(draft)


def end_waits(draft: Draft) -> None:
    """The saga stops going forward: the waits under way are abandoned."""
    for key, state in list(draft.nodes.items()):
        node = draft.definition.find(key)
        if isinstance(node, WaitFor) and state.status is NodeStatus.RUNNING and not state.timed_out:
            draft.set_node(key, status=NodeStatus.FAILED)
            if node.event is not None:
                draft.waits_ended.append(key)


def _waiting(draft: Draft, key: str) -> bool:
    state = draft.nodes.get(key)
    return (
        state is not None
        and state.status is NodeStatus.RUNNING
        and not state.timed_out
        and draft.instance.status is SagaStatus.RUNNING
    )


def _satisfy(draft: Draft, node: WaitFor, scope: Scope, key: str, received: Any) -> None:
    draft.set_node(key, status=NodeStatus.SUCCEEDED, received=received)
    if node.event is not None:
        draft.record(HistoryEventType.EVENT_RECEIVED, step=key, event=received)
        draft.waits_ended.append(key)
    else:
        draft.record(HistoryEventType.SIGNAL_RECEIVED, step=key, **received)
    for skipped in task_keys(node.on_timeout or (), scope.prefix):
        draft.set_step(skipped, status=StepStatus.SKIPPED)
    draft.emit(node.emits, scope, key=key)


def _signal_result(signal: Signal) -> dict[str, Any]:
    return {"name": signal.name, "id": signal.id, "data": signal.data}
