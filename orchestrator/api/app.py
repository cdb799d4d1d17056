"""The HTTP API (Litestar). Writes follow the same transaction rules as everything else."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from uuid import UUID

from litestar import Litestar, Response, get, post
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED

from orchestrator.api.problems import exception_handlers
from orchestrator.api.views import InstanceView, StartRequest, StartResponse, instance_view
from orchestrator.config import Settings
from orchestrator.errors import InstanceNotFound
from orchestrator.messaging.broker import Broker
from orchestrator.persistence import instances
from orchestrator.persistence.definitions import DefinitionCache
from orchestrator.service.starter import SagaStarter
from orchestrator.storage.database import create_engine, transaction
from orchestrator.storage.outbox import Relay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@post("/v1/sagas/{name:str}", status_code=HTTP_201_CREATED, summary="Start a saga instance")
async def start_saga(
    name: FromPath[str], data: JSONBody[StartRequest], state: State
) -> StartResponse:
    """Start an instance of the latest (or the given) version of saga `name`.

    404 when no such saga is registered; 422 when the body or the input is not valid (nothing
    is written then)."""
    starter: SagaStarter = state.starter
    instance = await starter.start(name, data.input, version=data.version)
    return StartResponse(
        id=instance.id,
        saga=instance.saga,
        version=instance.version,
        status=instance.status.value,
        created_at=instance.created_at,
    )


@get("/v1/instances/{instance_id:str}", summary="Read a saga instance")
async def get_instance(instance_id: FromPath[str], state: State) -> InstanceView:
    """Status, each step's state, attempts, results and timestamps. 404 for an unknown id."""
    try:
        key = UUID(instance_id)
    except ValueError as exc:
        raise InstanceNotFound(f"no saga instance {instance_id!r} (not a UUID)") from exc
    cache: DefinitionCache = state.definitions
    async with transaction(state.engine) as conn:
        snapshot = await instances.load(conn, key)
        definition = await cache.get(conn, snapshot.saga, snapshot.version)
    return instance_view(definition, snapshot)


@get("/health/live", summary="Liveness", include_in_schema=True)
async def live() -> Response[dict[str, Any]]:
    return Response({"status": "ok"})


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        broker = Broker(settings.amqp_url, settings.topology)
        await broker.connect()
        relay = Relay(engine, broker, grace_seconds=settings.outbox_grace_seconds)
        app.state.engine = engine
        app.state.starter = SagaStarter(engine, relay, settings.topology)
        app.state.definitions = DefinitionCache()
        try:
            yield
        finally:
            await broker.close()
            await engine.dispose()

    return Litestar(
        route_handlers=[start_saga, get_instance, live],
        lifespan=[lifespan],
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(title="Warren", version="0.1.0", path="/schema"),
        request_max_body_size=1024 * 1024,
        logging_config=None,  # the process configures logging (warren CLI), not the app
    )
