"""Saga definitions: the typed DSL users write and the data Warren stores."""

from orchestrator.definitions.model import (
    DEFAULT_COMPENSATION_RETRY,
    DEFAULT_STEP_RETRY,
    Compensation,
    Node,
    RetryPolicy,
    Saga,
    Step,
)

__all__ = [
    "DEFAULT_COMPENSATION_RETRY",
    "DEFAULT_STEP_RETRY",
    "Compensation",
    "Node",
    "RetryPolicy",
    "Saga",
    "Step",
]
