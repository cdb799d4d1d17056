"""The pure saga engine: values in, a transition out. No I/O, no clock, no randomness."""

from orchestrator.engine.decide import decide, new_instance
from orchestrator.engine.state import (
    Cancel,
    Dispatch,
    Event,
    HistoryEvent,
    InstanceState,
    Phase,
    Resume,
    SagaStatus,
    ScheduleTimer,
    Start,
    StepReply,
    StepState,
    StepStatus,
    TimerFired,
    TimerKind,
    Transition,
)

__all__ = [
    "Cancel",
    "Dispatch",
    "Event",
    "HistoryEvent",
    "InstanceState",
    "Phase",
    "Resume",
    "SagaStatus",
    "ScheduleTimer",
    "Start",
    "StepReply",
    "StepState",
    "StepStatus",
    "TimerFired",
    "TimerKind",
    "Transition",
    "decide",
    "new_instance",
]
