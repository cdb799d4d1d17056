"""Every route of the HTTP API, versioned under /v1. Errors are problem+json (problems.py)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.datastructures import State
from litestar.enums import MediaType
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_503_SERVICE_UNAVAILABLE

from orchestrator.api import schema
from orchestrator.api.openapi import AlsoPlainText, OptionalBody
from orchestrator.api.problems import error_responses, problem_of
from orchestrator.api.views import instance_view
from orchestrator.definitions import Saga, graph
from orchestrator.definitions.model import MAX_INT4, NAME
from orchestrator.engine import InstanceState, SagaStatus
from orchestrator.errors import (
    EventInvalid,
    InstanceNotFound,
    NotFound,
    SagaNotFound,
    UnknownVersion,
    WarrenError,
)
from orchestrator.messaging.cloudevents import CloudEvent
from orchestrator.messaging.cloudevents import validate as validate_event
from orchestrator.persistence import dead_letters, events, instances, pool_breakers
from orchestrator.persistence import definitions as stored_definitions
from orchestrator.service import verify
from orchestrator.service.starter import Started, StartRequest
from orchestrator.storage.database import ping, transaction

if TYPE_CHECKING:
    from litestar.types import ControllerRouterHandler

    from orchestrator.config import BreakerPolicy

POOL_WINDOW_SECONDS = 300

Limit = Annotated[int, QueryParameter(ge=1, le=500, description="Page size, 1 to 500.")]
DefinitionVersion = Annotated[
    int, PathParameter(ge=1, le=MAX_INT4, description="Definition version.")
]
LetterId = Annotated[int, PathParameter(ge=1, le=schema.MAX_ID, description="Dead letter id.")]
Instant = Annotated[
    str | None,
    QueryParameter(
        description="RFC 3339 (`2026-11-27T05:59:16Z`); the UTC instant within years 1-9999.",
        schema_extra={"format": "date-time"},
    ),
]
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,6})?([Zz]|[+-]\d\d:\d\d)")
# Errors every route that reads the database can answer.
UNAVAILABLE = 503


def _answer(status: int, body: type[Any], description: str) -> dict[int, ResponseSpec]:
    """The OpenAPI entry of an answer other than the route's usual one (not an error)."""
    return {
        status: ResponseSpec(data_container=body, description=description, generate_examples=False)
    }


def _uuid(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError as exc:
        raise InstanceNotFound(f"no saga instance {raw!r} (not a UUID)") from exc


def _saga_name(name: str) -> str:
    """A name no definition can have (NUL, too long, capitals…) names no saga: 404 at once."""
    if not NAME.fullmatch(name):
        raise SagaNotFound(f"no saga {name!r} is registered")
    return name


def _instants(**values: str | None) -> dict[str, datetime | None]:
    """RFC 3339 times whose UTC instant Postgres can be sent (years 1-9999); others are a 422
    naming them."""
    parsed: dict[str, datetime | None] = {}
    bad = []
    for key, value in values.items():
        moment = None
        if value is not None:
            try:
                if not _RFC3339.fullmatch(value):
                    raise ValueError(value)
                moment = datetime.fromisoformat(value.upper())  # 3.11 wants T and Z
            except ValueError:
                bad.append({"message": "not an RFC 3339 date-time", "key": key, "source": "query"})
                continue
            if not instances.representable(moment):
                message = "the UTC instant must fall within years 1 to 9999"
                bad.append({"message": message, "key": key, "source": "query"})
        parsed[key] = moment
    if bad:
        raise ValidationException(detail="a time is not valid", extra=bad)
    return parsed


class SagaController(Controller):
    path = "/v1/sagas"
    tags = ("instances",)

    @post(
        "/{name:str}",
        status_code=HTTP_201_CREATED,
        summary="Start a saga instance",
        responses=_answer(
            200,
            schema.StartResponse,
            "An earlier identical request (same key or instance id) started it.",
        )
        | error_responses(400, 404, 409, 413, 422, UNAVAILABLE),
    )
    async def start(
        self,
        name: FromPath[str],
        data: JSONBody[schema.StartBody],
        state: State,
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(
                name="Idempotency-Key",
                required=False,
                min_length=1,
                max_length=200,
                pattern=schema.STORABLE_TEXT,
                description="Same key and same body: the same instance (200). Different body: 409.",
            ),
        ] = None,
    ) -> Response[schema.StartResponse]:
        """Start an instance of the latest (or the given) version of saga `name`: 201.

        With an `Idempotency-Key` header (or a caller-chosen `instance_id`), repeating the same
        request returns the instance it started (200) and a different request under the same
        key is refused (409). 404 when no such saga is registered; 422 when the body or the
        input is not valid. Nothing is written when a request is refused."""
        started = await state.starter.start(
            StartRequest(
                saga=_saga_name(name),
                input=data.input,
                version=data.version,
                idempotency_key=idempotency_key,
                instance_id=data.instance_id,
                correlation_key=data.correlation_key,
            )
        )
        body = _started(started.instance)
        return Response(body, status_code=HTTP_201_CREATED if started.created else HTTP_200_OK)

    @post(
        "/{name:str}/batch",
        status_code=HTTP_200_OK,
        summary="Start several instances",
        responses=error_responses(400, 404, 413, 422, UNAVAILABLE),
    )
    async def start_batch(
        self, name: FromPath[str], data: JSONBody[schema.BatchStartBody], state: State
    ) -> schema.BatchStartResponse:
        """Start up to 1,000 instances of saga `name` in one request: 200, with one result per
        start in the order asked. Each start is committed or refused on its own, exactly as
        `POST /v1/sagas/{name}` would answer it (its `status`: 201, 200, 404, 409, 422 or
        503, with the `instance` it started or the `problem`); give each an
        `idempotency_key` (or an `instance_id`) to send a batch again safely. When every
        start is refused for one reason the whole request is (no such saga: 404; Postgres
        or RabbitMQ down: 503)."""
        saga = _saga_name(name)
        outcomes = await state.starter.start_many(
            [
                StartRequest(
                    saga=saga,
                    input=item.input,
                    version=item.version,
                    idempotency_key=item.idempotency_key,
                    instance_id=item.instance_id,
                    correlation_key=item.correlation_key,
                )
                for item in data.starts
            ]
        )
        refused = [o for o in outcomes if isinstance(o, WarrenError)]
        if len(refused) == len(outcomes) and (
            all(isinstance(o, SagaNotFound) for o in refused) or all(o.retryable for o in refused)
        ):
            raise refused[0]
        return schema.BatchStartResponse(results=[_batch_result(o) for o in outcomes])


def _started(instance: InstanceState) -> schema.StartResponse:
    return schema.StartResponse(
        id=instance.id,
        saga=instance.saga,
        version=instance.version,
        status=instance.status.value,
        created_at=instance.created_at,
    )


def _batch_result(outcome: Started | WarrenError) -> schema.BatchStartResult:
    if isinstance(outcome, Started):
        status = HTTP_201_CREATED if outcome.created else HTTP_200_OK
        return schema.BatchStartResult(status=status, instance=_started(outcome.instance))
    found = problem_of(outcome)
    if found is None:
        raise outcome  # not an error a start is refused with: a 500, logged
    return schema.BatchStartResult(status=found.status, problem=found)


class InstanceController(Controller):
    path = "/v1/instances"
    tags = ("instances",)

    @get("/", summary="List instances", responses=error_responses(400, 422, UNAVAILABLE))
    async def list(
        self,
        state: State,
        saga: Annotated[
            str | None, QueryParameter(pattern=schema.STORABLE_TEXT, description="Saga name.")
        ] = None,
        status: Annotated[SagaStatus | None, QueryParameter(description="Instance status.")] = None,
        correlation_key: Annotated[
            str | None,
            QueryParameter(pattern=schema.STORABLE_TEXT, description="Key given at start."),
        ] = None,
        created_after: Instant = None,
        created_before: Instant = None,
        updated_after: Instant = None,
        updated_before: Instant = None,
        limit: Limit = 50,
        cursor: Annotated[
            str | None, QueryParameter(description="`next_cursor` of the previous page.")
        ] = None,
    ) -> schema.InstanceList:
        """Newest first, with cursor pagination that stays correct while instances are written.
        `*_after` is inclusive, `*_before` exclusive."""
        times = _instants(
            created_after=created_after,
            created_before=created_before,
            updated_after=updated_after,
            updated_before=updated_before,
        )
        where = instances.InstanceFilter(
            saga=saga,
            status=status.value if status else None,
            correlation_key=correlation_key,
            **times,
        )
        async with transaction(state.engine) as conn:
            items, next_cursor = await instances.list_instances(
                conn, where, limit=limit, cursor=cursor
            )
        return schema.InstanceList(items=items, next_cursor=next_cursor)

    @get(
        "/{instance_id:str}",
        summary="Read an instance",
        responses=error_responses(400, 404, UNAVAILABLE),
    )
    async def read(self, instance_id: FromPath[str], state: State) -> schema.InstanceView:
        """Status, each step's state, attempts, results and timestamps. 404 for an unknown id."""
        key = _uuid(instance_id)
        async with transaction(state.engine) as conn:
            snapshot = await instances.load(conn, key)
            definition = await state.definitions.get(conn, snapshot.saga, snapshot.version)
        return instance_view(definition, snapshot)

    @get(
        "/{instance_id:str}/history",
        summary="An instance's event log",
        responses=error_responses(400, 404, 422, UNAVAILABLE),
    )
    async def history(
        self,
        instance_id: FromPath[str],
        state: State,
        after_seq: Annotated[
            int,
            QueryParameter(ge=0, le=MAX_INT4, description="Events after this sequence number."),
        ] = 0,
        limit: Limit = 200,
    ) -> schema.HistoryPage:
        """The append-only history: sequence, type, step, phase, attempt, pool, time, payload."""
        key = _uuid(instance_id)
        async with transaction(state.engine) as conn:
            if not await instances.instance_exists(conn, key):
                raise InstanceNotFound(f"no saga instance {key}")
            items = await instances.instance_history(conn, key, after_seq=after_seq, limit=limit)
        next_after = items[-1].seq if len(items) == limit else None
        return schema.HistoryPage(items=items, next_after_seq=next_after)

    @get(
        "/{instance_id:str}/verification",
        summary="Verify an instance against its history",
        responses=error_responses(400, 404, UNAVAILABLE),
    )
    async def verification(self, instance_id: FromPath[str], state: State) -> schema.Verification:
        """Replay the instance's history through the engine and compare what it gives, event
        by event and then with the stored snapshot: `ok`, `mismatch` (the first difference:
        seq, field, recorded and replayed values) or `unverifiable` (recorded before Warren
        kept each transition's cause). 404 for an unknown id."""
        key = _uuid(instance_id)
        async with transaction(state.engine) as conn:
            return await verify.verify_instance(conn, state.definitions, key)

    @post(
        "/{instance_id:str}/cancel",
        status_code=HTTP_200_OK,
        summary="Cancel an instance",
        responses=error_responses(400, 404, 409, 413, 422, UNAVAILABLE),
        operation_class=OptionalBody,
    )
    async def cancel(
        self,
        instance_id: FromPath[str],
        state: State,
        data: JSONBody[schema.CancelBody | None] = None,
    ) -> schema.InstanceView:
        """No new forward steps; what was done is compensated (a step in flight that still
        succeeds is compensated too). The instance ends `compensated`. 409 when it already
        ended; cancelling one that is compensating changes nothing."""
        reason = data.reason if data is not None else schema.CancelBody().reason
        snapshot = await state.operations.cancel(_uuid(instance_id), reason)
        return await _view(state, snapshot)

    @post(
        "/{instance_id:str}/retry",
        status_code=HTTP_200_OK,
        summary="Retry a failed instance",
        responses=error_responses(400, 404, 409, UNAVAILABLE),
    )
    async def retry(self, instance_id: FromPath[str], state: State) -> schema.InstanceView:
        """For a `failed` instance (a compensation that ran out of attempts): run that
        compensation again with a fresh retry budget, then the rest in reverse order. 409 for an
        instance in any other status."""
        snapshot = await state.operations.retry(_uuid(instance_id))
        return await _view(state, snapshot)

    @post(
        "/{instance_id:str}/signals/{name:str}",
        status_code=HTTP_200_OK,
        summary="Send a signal to an instance",
        responses=error_responses(400, 404, 409, 413, 422, UNAVAILABLE),
        operation_class=OptionalBody,
    )
    async def signal(
        self,
        instance_id: FromPath[str],
        name: Annotated[
            str,
            PathParameter(
                pattern=f"^{NAME.pattern}$", description="The signal's name, e.g. `approved`."
            ),
        ],
        state: State,
        data: JSONBody[schema.SignalBody | None] = None,
    ) -> schema.SignalResponse:
        """A wait for signal `name` (`WaitFor(signal=...)`) takes it, with `data` as what it
        received; with none under way, it is kept and the next such wait takes it. 409 when
        the instance is not running. With an `id`, sending the same signal again changes
        nothing (`duplicate`)."""
        body = data or schema.SignalBody()
        sent = await state.operations.signal(_uuid(instance_id), name, body.data, body.id)
        return schema.SignalResponse(
            instance_id=sent.instance.id,
            signal=name,
            id=sent.id,
            outcome=sent.outcome,
            status=sent.instance.status.value,
        )


async def _view(state: State, snapshot: InstanceState) -> schema.InstanceView:
    async with transaction(state.engine) as conn:
        definition = await state.definitions.get(conn, snapshot.saga, snapshot.version)
    return instance_view(definition, snapshot)


@get(
    "/v1/verifications",
    summary="Verify instances, a page at a time",
    tags=["instances"],
    responses=error_responses(400, 422, UNAVAILABLE),
)
async def verifications(
    state: State,
    after: Annotated[
        UUID | None, QueryParameter(description="`next_after` of the previous page.")
    ] = None,
    limit: Annotated[
        int, QueryParameter(ge=1, le=200, description="Instances per page, 1 to 200.")
    ] = 50,
) -> schema.VerificationPage:
    """Every instance's verification (as `GET /v1/instances/{id}/verification`), in instance
    id order, `limit` at a time: follow `next_after` to the end to verify them all."""
    async with transaction(state.engine) as conn:
        items, next_after = await verify.verify_page(
            conn, state.definitions, after=after, limit=limit
        )
    return schema.VerificationPage(items=items, next_after=next_after)


class DefinitionController(Controller):
    path = "/v1/definitions"
    tags = ("definitions",)

    @get("/", summary="List saga definitions", responses=error_responses(UNAVAILABLE))
    async def list(self, state: State) -> schema.DefinitionList:
        async with transaction(state.engine) as conn:
            return schema.DefinitionList(items=await stored_definitions.list_definitions(conn))

    @get(
        "/{name:str}",
        summary="Every version of one saga",
        responses=error_responses(400, 404, UNAVAILABLE),
    )
    async def versions(self, name: FromPath[str], state: State) -> schema.DefinitionVersions:
        """All versions with their steps, pools, compensations and input schema."""
        async with transaction(state.engine) as conn:
            found = await stored_definitions.definition_versions(conn, _saga_name(name))
        if not found:
            raise SagaNotFound(f"no saga {name!r} is registered")
        return schema.DefinitionVersions(name=name, versions=found)

    @get(
        "/{name:str}/{version:int}/graph",
        summary="One version of a saga as a graph",
        responses=error_responses(400, 404, 422, UNAVAILABLE),
        operation_class=AlsoPlainText,
    )
    async def graph(
        self,
        name: FromPath[str],
        version: DefinitionVersion,
        state: State,
        format: Annotated[
            Literal["json", "mermaid"],
            QueryParameter(description="`json` (the graph) or `mermaid` (its text/plain drawing)."),
        ] = "json",
    ) -> Response[schema.Graph]:
        """Its nodes (steps, child sagas, and the opening and closing node of each parallel,
        choice and map), the edges between them (branches, cases with their conditions, map
        items, joins), the compensation edges undo walks back along, and a group per flow. With
        `format=mermaid`, the same as a Mermaid `flowchart TD`. 404 for an unknown name or
        version."""
        async with transaction(state.engine) as conn:
            definition = await state.definitions.get(conn, _saga_name(name), version)
        drawn = graph.build(definition)
        if format == "mermaid":
            text: Any = graph.mermaid(drawn)  # the other media type AlsoPlainText documents
            return Response(text, media_type=MediaType.TEXT)
        return Response(drawn)

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Register a saga definition",
        responses=_answer(
            200, schema.RegisterResponse, "The same content is stored already (`unchanged`)."
        )
        | error_responses(400, 409, 413, 422, UNAVAILABLE),
    )
    async def register(
        self, data: JSONBody[Saga], state: State
    ) -> Response[schema.RegisterResponse]:
        """Same rules as `warren register`: 201 when stored, 200 when the same content is
        stored already, 409 for different content under an existing version, 422 when the
        definition is not valid."""
        async with transaction(state.engine) as conn:
            outcome = await stored_definitions.register(conn, data)
        body = schema.RegisterResponse(
            name=data.name,
            version=data.version,
            content_hash=data.content_hash,
            outcome=outcome.value,
        )
        created = outcome is stored_definitions.RegisterOutcome.CREATED
        return Response(body, status_code=HTTP_201_CREATED if created else HTTP_200_OK)


@get("/v1/pools", summary="Worker pools", tags=["pools"], responses=error_responses(UNAVAILABLE))
async def pools(state: State) -> schema.PoolList:
    """Each pool named by a registered definition: queue depth, consumers, commands in flight,
    and commands dispatched / attempts failed in the last five minutes."""
    cache: stored_definitions.DefinitionCache = state.definitions
    async with transaction(state.engine) as conn:
        keys = await stored_definitions.keys(conn)
        sagas = {(n, v): await cache.get(conn, n, v) for n, v in keys}
        activity = await instances.pool_activity(conn, window_seconds=POOL_WINDOW_SECONDS)
        breakers = await pool_breakers.rows(conn)
        flying = await instances.steps_in_flight(conn)
    names = set(activity) | set(breakers)
    for saga in sagas.values():
        names |= saga.pools
    in_flight: dict[str, int] = dict.fromkeys(names, 0)
    for saga_name, version, step_name, status in flying:
        owner = sagas.get((saga_name, version))
        if owner is None:
            continue
        step = owner.step(step_name)
        pool = step.pool if status == "running" else step.compensation_pool
        in_flight[pool] = in_flight.get(pool, 0) + 1
    items = []
    for name in sorted(names):
        ready, consumers = await state.broker.queue_counts(state.settings.topology.pool_queue(name))
        act = activity.get(name, instances.PoolActivity(dispatched=0, failed=0))
        items.append(
            schema.PoolView(
                name=name,
                queue=state.settings.topology.pool_queue(name),
                ready=ready,
                consumers=consumers,
                in_flight=in_flight.get(name, 0),
                dispatched_recently=act.dispatched,
                failed_recently=act.failed,
                window_seconds=POOL_WINDOW_SECONDS,
                breaker=_breaker_view(state.settings.breaker_for(name), breakers.get(name)),
            )
        )
    return schema.PoolList(items=items)


def _breaker_view(
    policy: BreakerPolicy, row: pool_breakers.BreakerRow | None
) -> schema.BreakerView:
    return schema.BreakerView(
        state=row.state if row is not None else "closed",
        changed_at=row.changed_at if row is not None else None,
        calls=row.calls if row is not None else 0,
        failures=row.failures if row is not None else 0,
        failure_rate=policy.failure_rate,
        min_calls=policy.min_calls,
        open_seconds=policy.open_seconds,
    )


@get("/health/live", summary="Liveness", tags=["health"])
async def live() -> dict[str, Any]:
    """The process answers."""
    return {"status": "ok"}


@get(
    "/health/ready",
    summary="Readiness",
    tags=["health"],
    responses=_answer(
        503, schema.Readiness, "Postgres or RabbitMQ does not answer; each says which."
    ),
)
async def ready(state: State) -> Response[schema.Readiness]:
    """200 only when Postgres and RabbitMQ both answer; 503 otherwise."""
    database = broker = "ok"
    try:
        await ping(state.engine)
    except WarrenError as exc:
        database = f"unavailable: {exc}"
    try:
        await state.broker.ping()
    except WarrenError as exc:
        broker = f"unavailable: {exc}"
    ok = database == broker == "ok"
    body = schema.Readiness(status="ok" if ok else "unavailable", database=database, broker=broker)
    return Response(body, status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE)


class DeadLetterController(Controller):
    path = "/v1/dead-letters"
    tags = ("dead letters",)

    @get("/", summary="List dead letters", responses=error_responses(400, 422, UNAVAILABLE))
    async def list(
        self,
        state: State,
        kind: Annotated[
            Literal["command", "reply"] | None, QueryParameter(description="Message kind.")
        ] = None,
        instance_id: Annotated[UUID | None, QueryParameter(description="Instance.")] = None,
        before_id: Annotated[
            int | None,
            QueryParameter(
                ge=1, le=schema.MAX_ID, description="`next_before_id` of the previous page."
            ),
        ] = None,
        limit: Limit = 50,
    ) -> schema.DeadLetterList:
        """Messages parked in the dead-letter queue (poison, or over the delivery limit), newest
        first, with their reason and origin."""
        async with transaction(state.engine) as conn:
            items = await dead_letters.list_dead_letters(
                conn, kind=kind, instance_id=instance_id, before_id=before_id, limit=limit
            )
        next_before = items[-1].id if len(items) == limit else None
        return schema.DeadLetterList(items=items, next_before_id=next_before)

    @get(
        "/{letter_id:int}",
        summary="Read a dead letter",
        responses=error_responses(400, 404, UNAVAILABLE),
    )
    async def read(self, letter_id: LetterId, state: State) -> schema.DeadLetterDetail:
        """With its body (as text) and headers."""
        async with transaction(state.engine) as conn:
            return await dead_letters.get_dead_letter(conn, letter_id)

    @post(
        "/{letter_id:int}/replay",
        status_code=HTTP_200_OK,
        summary="Replay a dead letter",
        responses=error_responses(400, 404, 409, UNAVAILABLE),
    )
    async def replay(self, letter_id: LetterId, state: State) -> schema.DeadLetterDetail:
        """Publish the message again to the exchange and routing key it came from (through the
        outbox) and mark it replayed. 409 when its origin is unknown."""
        async with transaction(state.engine) as conn:
            pending = await dead_letters.replay(conn, letter_id)
        await state.relay.publish_committed(pending)
        async with transaction(state.engine) as conn:
            return await dead_letters.get_dead_letter(conn, letter_id)

    @delete(
        "/{letter_id:int}",
        summary="Delete a dead letter",
        responses=error_responses(400, 404, UNAVAILABLE),
    )
    async def remove(self, letter_id: LetterId, state: State) -> None:
        """Forget it (204)."""
        async with transaction(state.engine) as conn:
            await dead_letters.delete_dead_letter(conn, letter_id)


class EventNotFound(NotFound):
    """No received event with that number (or it is past the retention)."""


class EventController(Controller):
    path = "/v1/events"
    tags = ("events",)

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Publish a domain event",
        responses=_answer(200, schema.EventReceipt, "A copy of an event received before.")
        | error_responses(400, 413, 422, UNAVAILABLE),
    )
    async def publish(
        self, data: JSONBody[schema.EventBody], state: State
    ) -> Response[schema.EventReceipt]:
        """Receive an event (a CloudEvent, structured mode): start the sagas whose triggers
        take it, satisfy the waits it matches (one per instance), or keep it for a wait that
        begins later (within the retention); and publish it on the events exchange for every
        other subscriber of its type. 201 with what it did; 200 for a copy of an event
        received before (same source and id: nothing is done again). 422 when its data does
        not fit the schema a definition declares for its type, or its `dataversion` is newer
        than any upcaster knows."""
        event = validate_event(CloudEvent(**msgspec.structs.asdict(data)))
        try:
            event = await state.receiver.prepare(event)
        except UnknownVersion as exc:
            raise EventInvalid(str(exc)) from exc
        receipt = await state.receiver.receive(event, via="api")
        body = schema.EventReceipt(
            id=receipt.id,
            source=receipt.source,
            type=receipt.type,
            seq=receipt.seq,
            duplicate=receipt.duplicate,
            started=receipt.started,
            reached=[schema.ReachedWait(instance_id=i, wait=w) for i, w in receipt.reached],
            problems=receipt.problems,
        )
        return Response(body, status_code=HTTP_200_OK if receipt.duplicate else HTTP_201_CREATED)

    @get("/", summary="List received events", responses=error_responses(400, 422, UNAVAILABLE))
    async def list(
        self,
        state: State,
        type: Annotated[
            str | None, QueryParameter(pattern=schema.STORABLE_TEXT, description="Event type.")
        ] = None,
        unmatched: Annotated[
            bool, QueryParameter(description="Only events that started and reached nothing.")
        ] = False,
        before_seq: Annotated[
            int | None,
            QueryParameter(ge=1, le=schema.MAX_ID, description="Events older than this one."),
        ] = None,
        limit: Limit = 50,
    ) -> schema.EventList:
        """Newest first; kept for `WARREN_EVENT_RETENTION_SECONDS`."""
        async with transaction(state.engine) as conn:
            items = await events.list_events(
                conn, type=type, unmatched=unmatched, before_seq=before_seq, limit=limit
            )
        next_before = items[-1].seq if len(items) == limit else None
        return schema.EventList(items=items, next_before_seq=next_before)

    @get(
        "/{seq:int}",
        summary="Read a received event",
        responses=error_responses(400, 404, UNAVAILABLE),
    )
    async def read(
        self,
        seq: Annotated[int, PathParameter(ge=1, le=schema.MAX_ID, description="Its number.")],
        state: State,
    ) -> schema.EventRow:
        async with transaction(state.engine) as conn:
            found = await events.get_event(conn, seq)
        if found is None:
            raise EventNotFound(f"no received event {seq} (or it is past the retention)")
        return found


route_handlers: list[ControllerRouterHandler] = [
    DeadLetterController,
    SagaController,
    InstanceController,
    DefinitionController,
    EventController,
    verifications,
    pools,
    live,
    ready,
]
