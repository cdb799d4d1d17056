"""Saga definitions: the typed DSL users write and the data Warren stores."""

from orchestrator.definitions.conditions import Condition, field
from orchestrator.definitions.model import (
    CHILD_POOL,
    DEFAULT_COMPENSATION_RETRY,
    DEFAULT_STEP_RETRY,
    Case,
    ChildSaga,
    Choice,
    Compensation,
    Emit,
    Map,
    Node,
    Parallel,
    RetryPolicy,
    Saga,
    Step,
    Task,
    Trigger,
    WaitFor,
)

__all__ = [
    "CHILD_POOL",
    "DEFAULT_COMPENSATION_RETRY",
    "DEFAULT_STEP_RETRY",
    "Case",
    "ChildSaga",
    "Choice",
    "Compensation",
    "Condition",
    "Emit",
    "Map",
    "Node",
    "Parallel",
    "RetryPolicy",
    "Saga",
    "Step",
    "Task",
    "Trigger",
    "WaitFor",
    "field",
]
