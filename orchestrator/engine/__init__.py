"""The pure saga engine: values in, a transition out. No I/O, no clock, no randomness.

    vocabulary    the words every layer shares: phases, statuses, event and failure types
    state         the instance snapshot, the events it takes, the transition it gives
    decide        `decide` and `new_instance`: routes each event to its concern
    draft         the transition being built (history, commands, timers)
    walk          run every node whose turn has come (the node kinds' runs are listed there)
    parallel      branches at once, joined
    choice        the first case whose condition holds, or the default
    fanout        a map: the same steps for each item of a list
    forward       start, the replies of steps and child sagas, a step that failed for good
    compensation  undo completed steps newest first, their replies
    ordering      a reply answers the dispatch whose seq it carries, or is ignored
    operations    cancel, resume, and a parent's request to undo a child saga
    timers        delay, retry, timeout, deadline
    waits         a wait for an event or a signal, and its timeout
    retries       may an attempt be retried, and how the next one is sent
    replay        rebuild an instance from its recorded history and compare (verify)

The engine imports only `orchestrator.definitions` and `orchestrator.errors`. Its names load
on first use, so the wire format can import the vocabulary without the engine's logic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.engine.decide import decide, new_instance
    from orchestrator.engine.state import (
        Cancel,
        Dispatch,
        Emitted,
        Event,
        EventReceived,
        HistoryEvent,
        InstanceState,
        NodeState,
        ParentLink,
        ParentReply,
        Resume,
        ScheduleTimer,
        Signal,
        SignalReceived,
        Start,
        StepReply,
        StepState,
        Subscription,
        TimerFired,
        Transition,
        Undo,
    )
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

_HOMES = {
    "orchestrator.engine.decide": ("decide", "new_instance"),
    "orchestrator.engine.state": (
        "Cancel",
        "Dispatch",
        "Emitted",
        "Event",
        "EventReceived",
        "HistoryEvent",
        "InstanceState",
        "NodeState",
        "ParentLink",
        "ParentReply",
        "Resume",
        "ScheduleTimer",
        "Signal",
        "SignalReceived",
        "Start",
        "StepReply",
        "StepState",
        "Subscription",
        "TimerFired",
        "Transition",
        "Undo",
    ),
    "orchestrator.engine.vocabulary": (
        "Failure",
        "FailureType",
        "HistoryEventType",
        "NodeStatus",
        "Phase",
        "SagaStatus",
        "StepStatus",
        "TimerKind",
    ),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> object:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found once; later look-ups do not come here
    return value


__all__ = [
    "Cancel",
    "Dispatch",
    "Emitted",
    "Event",
    "EventReceived",
    "Failure",
    "FailureType",
    "HistoryEvent",
    "HistoryEventType",
    "InstanceState",
    "NodeState",
    "NodeStatus",
    "ParentLink",
    "ParentReply",
    "Phase",
    "Resume",
    "SagaStatus",
    "ScheduleTimer",
    "Signal",
    "SignalReceived",
    "Start",
    "StepReply",
    "StepState",
    "StepStatus",
    "Subscription",
    "TimerFired",
    "TimerKind",
    "Transition",
    "Undo",
    "decide",
    "new_instance",
]
