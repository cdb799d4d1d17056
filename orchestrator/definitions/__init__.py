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
    Map,
    Node,
    Parallel,
    RetryPolicy,
    Saga,
    Step,
    Task,
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
    "Map",
    "Node",
    "Parallel",
    "RetryPolicy",
    "Saga",
    "Step",
    "Task",
    "field",
]
