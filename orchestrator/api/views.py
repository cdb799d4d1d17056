"""What the API returns: read models built from the instance snapshot (never from history)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec

from orchestrator.messaging.failure import Failure

if TYPE_CHECKING:
    from orchestrator.definitions import Saga
    from orchestrator.engine import InstanceState


class StartRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    input: Any = msgspec.field(default_factory=dict)
    """The saga's input; must satisfy the definition's input schema."""
    version: int | None = None
    """Pin a definition version; the latest when omitted."""


class StartResponse(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    saga: str
    version: int
    status: str
    created_at: datetime


class CompensationView(msgspec.Struct, frozen=True, kw_only=True):
    command: str
    pool: str
    attempts: int
    error: Failure | None
    compensated_at: datetime | None


class StepView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    pool: str
    command: str
    status: str
    attempts: int
    result: Any
    error: Failure | None
    started_at: datetime | None
    finished_at: datetime | None
    compensation: CompensationView | None


class InstanceView(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    saga: str
    version: int
    status: str
    input: Any
    failure: Failure | None
    created_at: datetime
    updated_at: datetime
    steps: list[StepView]


def instance_view(definition: Saga, state: InstanceState) -> InstanceView:
    steps = []
    for step in definition.steps:
        s = state.steps[step.name]
        compensation = None
        if step.compensation is not None:
            compensation = CompensationView(
                command=step.compensation.command,
                pool=step.compensation_pool,
                attempts=s.compensation_attempt,
                error=s.compensation_error,
                compensated_at=s.compensated_at,
            )
        steps.append(
            StepView(
                name=step.name,
                pool=step.pool,
                command=step.command_name,
                status=s.status.value,
                attempts=s.attempt,
                result=s.result,
                error=s.error,
                started_at=s.started_at,
                finished_at=s.finished_at,
                compensation=compensation,
            )
        )
    return InstanceView(
        id=state.id,
        saga=state.saga,
        version=state.version,
        status=state.status.value,
        input=state.input,
        failure=state.failure,
        created_at=state.created_at,
        updated_at=state.updated_at,
        steps=steps,
    )
