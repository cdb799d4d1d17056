"""What the API answers and accepts: plain msgspec structs, the contract the server and the
Python client share.

The client imports this module alone, so it stays light: msgspec, the DSL's types and the
failure struct, never SQLAlchemy, aio-pika, Litestar, OpenTelemetry or Prometheus
(tests/unit/test_layers.py checks it). The persistence layer builds the row types below; the
API's builders live in `orchestrator.api.views`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from orchestrator.definitions.graph import Graph, GraphEdge, GraphGroup, GraphNode
from orchestrator.definitions.model import MAX_INT4, Version

# The module itself, not the `orchestrator.messaging` package: only msgspec behind it.
from orchestrator.messaging.failure import Failure

__all__ = [
    "MAX_BATCH_STARTS",
    "MAX_ID",
    "STORABLE_TEXT",
    "TYPE_PREFIX",
    "BatchStart",
    "BatchStartBody",
    "BatchStartResponse",
    "BatchStartResult",
    "BreakerView",
    "CancelBody",
    "ChildView",
    "CompensationView",
    "CorrelationKey",
    "DeadLetterDetail",
    "DeadLetterList",
    "DeadLetterRow",
    "DefinitionList",
    "DefinitionSummary",
    "DefinitionVersions",
    "EventBody",
    "EventList",
    "EventReceipt",
    "EventRow",
    "Failure",
    "Graph",
    "GraphEdge",
    "GraphGroup",
    "GraphNode",
    "HistoryPage",
    "HistoryRow",
    "IdempotencyKey",
    "InstanceList",
    "InstanceRow",
    "InstanceView",
    "NodeView",
    "ParentView",
    "PartView",
    "PoolList",
    "PoolView",
    "Problem",
    "ReachedWait",
    "Readiness",
    "RegisterResponse",
    "SignalBody",
    "SignalResponse",
    "StartBody",
    "StartResponse",
    "StepView",
    "StoredDefinition",
]

MAX_ID = 2**53 - 1
"""Ids of bigint columns (dead letters) the API accepts: far past any id the table will reach,
read exactly by every JSON client, and exact in the OpenAPI document (which holds floats)."""
STORABLE_TEXT = "^[^\\x00]*$"
"""Postgres text cannot hold a NUL character: a value with one is refused (422), in the schema."""
CorrelationKey = Annotated[str, msgspec.Meta(max_length=200, pattern=STORABLE_TEXT)]
IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=STORABLE_TEXT)]
MAX_BATCH_STARTS = 1000
"""Starts one `POST /v1/sagas/{name}/batch` may ask for."""
TYPE_PREFIX = "urn:warren:problem:"


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """RFC 9457 problem details: the body of every error (documents what `problem` sends)."""

    type: str
    """`urn:warren:problem:<slug>`, stable: branch on it."""
    title: str
    status: int
    detail: str
    """What went wrong, for a human."""
    errors: list[Any] = msgspec.field(default_factory=list)
    """Each failure, when there are several: a text (`input-invalid`, naming the field) or an
    object with `message`, `key` and `source` (`request-invalid`)."""


# ---- instances ------------------------------------------------------------------------------


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


class StartResponse(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    saga: str
    version: int
    status: str
    created_at: datetime


class BatchStart(StartBody, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One start of `POST /v1/sagas/{name}/batch`: a start's body and its key."""

    idempotency_key: IdempotencyKey | None = None
    """What the `Idempotency-Key` header is to a single start."""


class BatchStartBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/sagas/{name}/batch`."""

    starts: Annotated[list[BatchStart], msgspec.Meta(min_length=1, max_length=MAX_BATCH_STARTS)]


class BatchStartResult(msgspec.Struct, frozen=True, kw_only=True):
    """One start's outcome: `status` is what a single start would have answered (201, 200, or
    the problem's); `instance` when it started (now or earlier), `problem` when refused."""

    status: int
    instance: StartResponse | None = None
    problem: Problem | None = None


class BatchStartResponse(msgspec.Struct, frozen=True, kw_only=True):
    results: list[BatchStartResult]
    """One per start asked, in the same order."""


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


class PartView(msgspec.Struct, frozen=True, kw_only=True):
    """One branch of a parallel or one item of a map."""

    label: str
    """``branch 1``, ``branch 2``… or ``item 0``, ``item 1``… (items count from 0, as in keys)."""
    status: str
    """`pending` until started; then its last node's status once that one started, else
    `running` (`failed` when one of its nodes failed)."""


class NodeView(msgspec.Struct, frozen=True, kw_only=True):
    """A parallel, a choice, a map or a wait (steps and child sagas are in `steps`)."""

    key: str
    """Its name; ``seats[1]/name`` inside a map's item, like a step's."""
    kind: str
    """`parallel`, `choice`, `map` or `wait`."""
    status: str
    """`pending` (its turn has not come), `running`, `succeeded` or `failed`."""
    case: str | None = None
    """The case a choice took (``default`` for its default)."""
    branches: int | None = None
    """A parallel's branches."""
    items: int | None = None
    """A map's items, once found."""
    started: int = 0
    """Branches or items started so far."""
    parts: list[PartView] = []
    """Each branch or item, in order."""
    received: Any = None
    """What a wait received: the event (`id`, `source`, `type`, `subject`, `time`, `data`) or
    the signal (`name`, `id`, `data`)."""
    timed_out: bool = False
    """A wait whose timeout passed first."""


class ParentView(msgspec.Struct, frozen=True, kw_only=True):
    """The instance, and its `ChildSaga` step, that started this one."""

    instance_id: UUID
    saga: str
    version: int
    step: str


class ChildView(msgspec.Struct, frozen=True, kw_only=True):
    """A `ChildSaga` step of this instance: the saga it starts, and how that went."""

    step: str
    """Its key, as in `steps`."""
    saga: str
    version: int | None
    """The version pinned in the definition; null for the newest when it starts."""
    status: str
    """The step's status: `succeeded` once the child completed (its results are the step's)."""
    instance_id: UUID | None = None
    """The child instance (read it with `GET /v1/instances/{id}`) once the order to start it
    is out; null before."""


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
    """Every step and child saga by key, in definition order; a map's items' in item order."""
    nodes: list[NodeView] = []
    """Every parallel, choice and map by key, in the same order."""
    parent: ParentView | None = None
    """Set on a child saga's instance."""
    children: list[ChildView] = []


class InstanceRow(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    saga: str
    version: int
    status: str
    correlation_key: str | None
    created_at: datetime
    updated_at: datetime


class InstanceList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[InstanceRow]
    next_cursor: str | None
    """Pass as `cursor` for the next (older) page; null on the last page."""


class HistoryRow(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    type: str
    step: str | None
    phase: str | None
    attempt: int | None
    pool: str | None
    recorded_at: datetime
    data: dict[str, Any]


class HistoryPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[HistoryRow]
    next_after_seq: int | None
    """Pass as `after_seq` for the next page; null on the last page."""


class Verification(msgspec.Struct, frozen=True, kw_only=True):
    """An instance's history replayed through the engine and compared with its snapshot."""

    instance_id: UUID
    outcome: Literal["ok", "mismatch", "unverifiable"]
    """`unverifiable`: recorded before Warren kept each transition's cause (not a failure)."""
    message: str
    """What was found, for a human; on a mismatch, where and what to do."""
    transitions: int
    """Transitions replayed (up to the first difference)."""
    seq: int | None = None
    """The history event where replay first differs (null: the snapshot differs)."""
    field: str | None = None
    """What differs: a history field (`type`, `data`…), or a path in the snapshot."""
    recorded: Any = None
    replayed: Any = None


class VerificationPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Verification]
    """In instance id order."""
    next_after: UUID | None
    """Pass as `after` for the next page; null on the last page."""


class CancelBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(pattern=STORABLE_TEXT)] = "cancelled by request"


# ---- definitions ----------------------------------------------------------------------------


class DefinitionSummary(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    latest_version: int
    versions: list[int]
    registered_at: datetime


class DefinitionList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[DefinitionSummary]


class StoredDefinition(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    content_hash: str
    registered_at: datetime
    body: dict[str, Any]


class DefinitionVersions(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    versions: list[StoredDefinition]


# A definition's graph (`GET /v1/definitions/{name}/{version}/graph`) is built in
# orchestrator.definitions.graph, where its types live: `Graph`, `GraphNode`, `GraphEdge`,
# `GraphGroup`, imported above for the client.


class RegisterResponse(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: int
    content_hash: str
    outcome: str
    """`created` or `unchanged`."""


# ---- pools and health -----------------------------------------------------------------------


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


# ---- dead letters ---------------------------------------------------------------------------


class DeadLetterRow(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    message_id: str | None
    kind: str | None
    """`command`, `reply`, or null when the body did not decode."""
    instance_id: UUID | None
    reason: str
    origin_exchange: str | None
    origin_routing_key: str | None
    origin_queue: str | None
    received_at: datetime
    replayed_at: datetime | None


class DeadLetterDetail(DeadLetterRow, frozen=True, kw_only=True):
    body: str
    """The message body as text (invalid UTF-8 replaced)."""
    headers: dict[str, Any]


class DeadLetterList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[DeadLetterRow]
    next_before_id: int | None
    """Pass as `before_id` for the next (older) page; null on the last page."""


# ---- events and signals ------------------------------------------------------------------------

EventType = Annotated[str, msgspec.Meta(pattern="^[a-z][a-z0-9_.-]{0,127}$")]
EventText = Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=STORABLE_TEXT)]


class EventBody(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /v1/events`: a CloudEvent in structured mode (other extension attributes are
    ignored)."""

    id: EventText
    """Unique within `source`: the same (source, id) again is a duplicate."""
    source: EventText
    type: EventType
    """What happened: ``payment.captured``."""
    specversion: Literal["1.0"] = "1.0"
    time: datetime | None = None
    subject: EventText | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: EventText | None = None
    dataversion: Annotated[int, msgspec.Meta(ge=1, le=MAX_INT4)] = 1
    """The version of the data's shape: older ones are upcast, newer ones refused."""
    correlationid: EventText | None = None
    traceparent: EventText | None = None
    data: Any = None


class ReachedWait(msgspec.Struct, frozen=True, kw_only=True):
    instance_id: UUID
    wait: str
    """The key of the wait that took the event."""


class EventReceipt(msgspec.Struct, frozen=True, kw_only=True):
    """What a received event did."""

    id: str
    source: str
    type: str
    seq: int | None
    """Its number among received events; null for a duplicate (nothing was done again)."""
    duplicate: bool
    started: list[UUID]
    """Instances its triggers started."""
    reached: list[ReachedWait]
    """Waits it satisfied (one per instance)."""
    problems: list[str]
    """Why a trigger that matched started nothing (the input it mapped did not fit)."""


class EventRow(msgspec.Struct, frozen=True, kw_only=True):
    """A received event, as recorded."""

    seq: int
    id: str
    source: str
    type: str
    subject: str | None = None
    time: str | None = None
    data: Any = None
    attributes: dict[str, Any] = {}
    """The other CloudEvents attributes (dataversion, correlationid, traceparent...)."""
    via: str
    """``broker`` or ``api``."""
    received_at: datetime
    started: int
    reached: int
    """Instances it started and waits it satisfied: both 0 for an unmatched event (kept, in
    case a wait for it begins, until the retention ends)."""
    problems: str | None = None


class EventList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[EventRow]
    next_before_seq: int | None
    """Pass as `before_seq` for the next (older) page; null on the last page."""


class SignalBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/instances/{id}/signals/{name}`."""

    data: Any = None
    """What the wait receives (``results.<wait>.data``)."""
    id: CorrelationKey | None = None
    """Your id for the signal: sending it again with the same id changes nothing."""


class SignalResponse(msgspec.Struct, frozen=True, kw_only=True):
    instance_id: UUID
    signal: str
    id: str
    outcome: Literal["delivered", "kept", "duplicate"]
    """``delivered``: a wait took it; ``kept``: no wait for it yet, the next one takes it;
    ``duplicate``: a signal with this id was sent before."""
    status: str
    """The instance's status after it."""
