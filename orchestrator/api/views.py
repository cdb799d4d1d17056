"""What the API returns: read models built from the instance snapshot (never from history)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import msgspec

from orchestrator.definitions.model import Version
from orchestrator.messaging.failure import Failure
from orchestrator.persistence.dead_letters import DeadLetterRow
from orchestrator.persistence.queries import (
    DefinitionSummary,
    HistoryRow,
    InstanceRow,
    StoredDefinition,
)

if TYPE_CHECKING:
    from orchestrator.definitions import Saga
    from orchestrator.engine import InstanceState

MAX_ID = 2**53 - 1
"""Ids of bigint columns (dead letters) the API accepts: far past any id the table will reach,
read exactly by every JSON client, and exact in the OpenAPI document (which holds floats)."""
STORABLE_TEXT = "^[^\\x00]*$"
"""Postgres text cannot hold a NUL character: a value with one is refused (422), in the schema."""
CorrelationKey = Annotated[str, msgspec.Meta(max_length=200, pattern=STORABLE_TEXT)]


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


class StartBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/sagas/{name}`."""

    input: Any = msgspec.field(default_factory=dict)
    """The saga's input; must satisfy the definition's input schema."""
    version: Version | None = None
    """Pin a definition version; the latest when omitted."""
    instance_id: UUID | None = None
    """Choose the instance id yourself: starting twice with it is idempotent."""
    correlation_key: CorrelationKey | None = None
    """A free key (an order number…) to find the instance by later."""


class InstanceList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[InstanceRow]
    next_cursor: str | None
    """Pass as `cursor` for the next (older) page; null on the last page."""


class HistoryPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[HistoryRow]
    next_after_seq: int | None
    """Pass as `after_seq` for the next page; null on the last page."""


class CancelBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(pattern=STORABLE_TEXT)] = "cancelled by request"


class DefinitionList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[DefinitionSummary]


class DefinitionVersions(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    versions: list[StoredDefinition]


class RegisterResponse(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: int
    content_hash: str
    outcome: str
    """`created` or `unchanged`."""


class BreakerView(msgspec.Struct, frozen=True, kw_only=True):
    state: str
    """`closed` (commands flow), `open` (they wait in the outbox), `half_open` (one probe)."""
    changed_at: datetime | None
    calls: int
    """Attempts that ended since the last change (within the window)."""
    failures: int
    failure_rate: float
    """Threshold: opens at this share of failed attempts…"""
    min_calls: int
    """…out of at least this many."""
    open_seconds: float


class PoolView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    queue: str
    ready: int | None
    """Commands waiting in the queue; null when the queue does not exist yet."""
    consumers: int | None
    """Consumers attached (each worker process holds one per pool it serves)."""
    in_flight: int
    """Commands dispatched whose reply has not been applied yet."""
    dispatched_recently: int
    failed_recently: int
    """Attempts that failed (any reason) within the window."""
    window_seconds: int
    breaker: BreakerView


class PoolList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[PoolView]


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    database: str
    broker: str


class DeadLetterList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[DeadLetterRow]
    next_before_id: int | None
    """Pass as `before_id` for the next (older) page; null on the last page."""
