"""The HTTP API application (Litestar): wiring, lifespan, OpenAPI."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.plugins.prometheus import PrometheusConfig

from orchestrator.api.openapi import ClosedStructSchemas, MetricsController, allow_every_method
from orchestrator.api.problems import exception_handlers
from orchestrator.api.routes import route_handlers
from orchestrator.config import Settings
from orchestrator.messaging.broker import Broker
from orchestrator.messaging.relay import BreakerBoard, Relay
from orchestrator.messaging.versions import load_upcaster_modules
from orchestrator.observability import tracing
from orchestrator.persistence.definitions import DefinitionCache
from orchestrator.service.events import EventReceiver
from orchestrator.service.operations import Operations
from orchestrator.service.starter import SagaStarter
from orchestrator.storage.database import create_engine

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    load_upcaster_modules(settings.upcasters)  # the events it takes are read in current shapes

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        broker = Broker(settings.amqp_url, settings.topology)
        await broker.connect()
        relay = Relay(
            engine,
            broker,
            grace_seconds=settings.outbox_grace_seconds,
            breakers=BreakerBoard(),
            commands_exchange=settings.topology.commands_exchange,
        )
        definitions = DefinitionCache()
        app.state.settings = settings
        app.state.engine = engine
        app.state.broker = broker
        app.state.definitions = definitions
        app.state.relay = relay
        app.state.starter = SagaStarter(engine, relay, settings.topology, definitions)
        app.state.operations = Operations(engine, relay, settings.topology, definitions)
        app.state.receiver = EventReceiver(engine, relay, settings.topology, definitions)
        try:
            yield
        finally:
            await relay.flush()
            await broker.close()
            await engine.dispose()

    # HTTP metrics (warren_api_*) and a server span per request, which a saga's trace starts
    # from (or joins, when the caller sent a traceparent). Health checks and scrapes are left out.
    quiet = ["/metrics", "/health"]
    prometheus = PrometheusConfig(
        app_name="warren", prefix="warren_api", group_path=True, exclude=quiet
    )
    return Litestar(
        route_handlers=[*route_handlers, MetricsController],
        middleware=[prometheus.middleware, tracing.name_server_span_by_route],
        plugins=[
            OpenTelemetryPlugin(
                OpenTelemetryConfig(
                    exclude=quiet,
                    scope_span_details_extractor=tracing.server_span_details,
                    exclude_spans=["receive", "send"],  # per ASGI message: noise
                )
            ),
            ClosedStructSchemas(),
        ],
        before_request=allow_every_method,
        lifespan=[lifespan],
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(
            title="Warren",
            version="0.1.0",
            description="Saga orchestration on RabbitMQ and Postgres. Errors are RFC 9457 "
            "problem details (application/problem+json) with a stable `type`.",
            path="/schema",
        ),
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,  # the process configures logging (warren CLI), not the app
    )
