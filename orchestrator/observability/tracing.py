"""Tracing: one trace per saga instance, across the API, the orchestrators and the workers.

W3C trace context travels in the AMQP headers of every message, and is stored with outbox rows
(their headers), timers and the instance itself, so a message published later by a sweeper, a
retry fired by a timer minutes later, an operator's action and a dead-letter replay all join the
saga's trace. The SDK is installed only when the standard `OTEL_*` variables ask for an
exporter; otherwise the API's no-op tracer still carries the context through, at almost no cost.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from orchestrator.config import ConfigError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping

    from opentelemetry.trace import Span

    ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

tracer = trace.get_tracer("warren")
"""A proxy: spans started through it use whatever provider `configure` installs later."""

_provider: Any = None


def configure(service_name: str) -> None:
    """Install the SDK with the exporter(s) the standard environment variables ask for.

    Tracing is on when `OTEL_TRACES_EXPORTER` names an exporter (otlp, console) or an OTLP
    endpoint is set; `OTEL_SDK_DISABLED=true` turns it off. `OTEL_SERVICE_NAME` overrides the
    process's default service name, `OTEL_TRACES_SAMPLER` picks the sampler."""
    global _provider
    env = os.environ
    if _provider is not None or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    names = env.get("OTEL_TRACES_EXPORTER")
    if names is None and not (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return
    exporters = [n.strip() for n in (names or "otlp").split(",") if n.strip() not in ("", "none")]
    if not exporters:
        return

    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    _provider = provider


def _exporter(name: str) -> Any:
    if name == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol != "http/protobuf":
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: Warren exports "
                "OTLP over HTTP (http/protobuf, port 4318)"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    raise ConfigError(f"OTEL_TRACES_EXPORTER names {name!r}; Warren knows otlp, console, none")


def shutdown() -> None:
    """Flush the spans still queued (at process exit)."""
    if _provider is not None:
        _provider.shutdown()


# ---- context in carriers (AMQP headers, stored rows) ----------------------------------------


def extract(headers: Mapping[str, Any] | None) -> Context:
    """The trace context a message's headers carry (an empty context when none)."""
    carrier = {k: v for k, v in (headers or {}).items() if isinstance(v, str)}
    return propagate.extract(carrier)


def from_traceparent(traceparent: str | None) -> Context | None:
    return propagate.extract({"traceparent": traceparent}) if traceparent else None


def carrier() -> dict[str, str]:
    """The current context as W3C headers (`traceparent`, `tracestate`) to store or send."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def current_traceparent(fallback: str | None = None) -> str | None:
    """The current span as a `traceparent` value; `fallback` when there is no span."""
    return carrier().get("traceparent", fallback)


def trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, in hex, for log lines."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


# ---- HTTP server spans -------------------------------------------------------------------------

_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


def server_span_details(scope: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The name a request's server span starts with, before routing: its method alone (`HTTP`
    for a method outside the standard set), so an unmatched path never names an operation.
    `name_server_span_by_route` renames it once the route is known."""
    method = str(scope.get("method", "")).upper()
    return (method if method in _METHODS else "HTTP"), {"url.path": scope.get("path", "")}


def name_server_span_by_route(app: ASGIApp) -> ASGIApp:
    """ASGI middleware for a routed request: names the current (server) span by its route
    template, `POST /v1/sagas/{name}`, sets `http.route` to the template and keeps the concrete
    path parameters as `warren.path_param.<name>`. One operation per route, not per instance."""

    async def named(scope: Any, receive: Any, send: Any) -> None:
        template = scope.get("path_template")
        current = trace.get_current_span()
        if template and current.is_recording():
            method = str(scope.get("method", "")).upper()
            current.update_name(f"{method if method in _METHODS else 'HTTP'} {template}")
            current.set_attribute("http.route", template)
            for name, value in (scope.get("path_params") or {}).items():
                current.set_attribute(f"warren.path_param.{name}", str(value))
        await app(scope, receive, send)

    return named


# ---- spans -------------------------------------------------------------------------------------


def saga_attributes(
    *,
    saga: str | None = None,
    version: int | None = None,
    instance_id: object = None,
    step: str | None = None,
    phase: str | None = None,
    attempt: int | None = None,
    pool: str | None = None,
) -> dict[str, Any]:
    values = {
        "warren.saga.name": saga,
        "warren.saga.version": version,
        "warren.instance.id": str(instance_id) if instance_id is not None else None,
        "warren.step.name": step,
        "warren.step.phase": phase,
        "warren.step.attempt": attempt,
        "warren.pool": pool,
    }
    return {k: v for k, v in values.items() if v is not None}


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Context | None = None,
    links: list[Link] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span that records an escaping exception as an error and re-raises it."""
    with tracer.start_as_current_span(
        name, context=parent, kind=kind, links=links, attributes=attributes
    ) as current:
        yield current


def root_span(name: str, *, links: list[Link] | None = None) -> Span:
    """A span that begins a trace of its own (a saga's, started among others), linked to
    `links`; not made current, ended by the caller."""
    return tracer.start_span(name, context=Context(), links=links)


def traceparent_of(current: Span) -> str | None:
    """`current` as a `traceparent` value (None for a span that is not valid)."""
    headers: dict[str, str] = {}
    propagate.inject(headers, context=trace.set_span_in_context(current))
    return headers.get("traceparent")


def link_to_current() -> list[Link]:
    """A link to the current span, for a span that starts in another trace."""
    context = trace.get_current_span().get_span_context()
    return [Link(context)] if context.is_valid else []


def mark_error(current: Span, description: str) -> None:
    current.set_status(Status(StatusCode.ERROR, description))


class Message(Protocol):
    """What a span needs of a message, incoming (aio-pika's) or outgoing (an outbox row)."""

    @property
    def headers(self) -> Mapping[str, Any] | None: ...
    @property
    def exchange(self) -> str | None: ...
    @property
    def routing_key(self) -> str | None: ...
    @property
    def message_id(self) -> object: ...
    @property
    def body(self) -> bytes: ...


def messaging_span(
    operation: str, message: Message, *, queue: str | None = None
) -> contextlib.AbstractContextManager[Span]:
    """The span of one publish (`send <exchange>`, a producer) or of one message consumed
    (`process <queue>`, a consumer), a child of the context the message's headers carry, with
    the messaging semantic conventions for RabbitMQ."""
    exchange, message_id = message.exchange, message.message_id
    sending = operation == "send"
    values: dict[str, Any] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": operation,
        "messaging.operation.name": "publish" if sending else "consume",
        "messaging.destination.name": exchange or "amq.default",
        "messaging.rabbitmq.destination.routing_key": message.routing_key,
        "messaging.message.id": str(message_id) if message_id is not None else None,
        "messaging.message.body.size": len(message.body),
        "messaging.consumer.group.name": queue,
    }
    return span(
        f"send {exchange}" if sending else f"process {queue}",
        kind=SpanKind.PRODUCER if sending else SpanKind.CONSUMER,
        parent=extract(message.headers),
        attributes={k: v for k, v in values.items() if v is not None},
    )
