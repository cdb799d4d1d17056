"""Prometheus metrics of every Warren process, on the default registry.

The API serves them on its own port at `/metrics`; orchestrators and workers start a small
HTTP server (`WARREN_METRICS_PORT`; unset: a default port, or a free one when that is taken, and
the log says which). Labels are bounded: saga, step, pool, phase, queue, status and outcome come
from definitions and code, never from instances or free text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from orchestrator.engine import Transition

# Step handlers run for milliseconds to minutes; sagas for milliseconds to hours.
_STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SAGA_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

sagas_started = Counter("warren_sagas_started", "Saga instances started.", ["saga"])
sagas_ended = Counter(
    "warren_sagas_ended",
    "Saga instances that reached completed, compensated or failed.",
    ["saga", "status"],
)
saga_duration = Histogram(
    "warren_saga_duration_seconds",
    "From start to completed, compensated or failed.",
    ["saga", "status"],
    buckets=_SAGA_BUCKETS,
)
step_duration = Histogram(
    "warren_step_duration_seconds",
    "Time a worker took to handle one command, its transaction included.",
    ["saga", "step", "pool", "phase", "outcome"],
    buckets=_STEP_BUCKETS,
)
step_retries = Counter(
    "warren_step_retries",
    "Attempts after the first, of steps and compensations.",
    ["saga", "step", "pool", "phase"],
)
messages = Counter(
    "warren_messages",
    "Messages consumed, by how they were settled: acked, requeued (handed back after a bug "
    "or a long outage) or dead_lettered (poison).",
    ["queue", "outcome"],
)
inbox_duplicates = Counter(
    "warren_inbox_duplicates_dropped",
    "Redelivered or republished copies the inbox recognised and dropped.",
    ["consumer"],
)
dead_letters = Counter(
    "warren_dead_letters_recorded",
    "Messages recorded from the dead-letter queue, by the queue they came from.",
    ["origin"],
)
outbox_published = Counter(
    "warren_outbox_published",
    "Outbox rows published and confirmed, right after commit or by the sweeper.",
    ["path"],
)
outbox_backlog = Gauge("warren_outbox_backlog_messages", "Rows waiting in the outbox.")
outbox_oldest_age = Gauge(
    "warren_outbox_oldest_age_seconds", "Age of the oldest row in the outbox (0 when empty)."
)
breaker_state = Gauge(
    "warren_circuit_breaker_state",
    "Circuit breaker of a worker pool, as this process sees it: 0 closed, 1 half-open, 2 open.",
    ["pool"],
)
consumers = Gauge(
    "warren_consumers", "Queue subscriptions this process holds (0 while reconnecting).", ["queue"]
)
in_flight = Gauge("warren_messages_in_flight", "Messages being handled now.", ["queue"])
broker_connected = Gauge(
    "warren_broker_connected", "1 while this process's RabbitMQ connection is up."
)

# Status values, not the engine's enum: workers use this module and never import the engine.
_TERMINAL = {"completed", "compensated", "failed"}


def observe_transition(transition: Transition) -> None:
    """Count what a committed transition did: retries dispatched, sagas that ended."""
    state = transition.instance
    for dispatch in transition.dispatches:
        if dispatch.attempt > 1:
            step_retries.labels(state.saga, dispatch.step, dispatch.pool, dispatch.phase).inc()
    ended = any(event.type == f"saga_{state.status.value}" for event in transition.history)
    if state.status.value in _TERMINAL and ended:
        sagas_ended.labels(state.saga, state.status.value).inc()
        seconds = (state.updated_at - state.created_at).total_seconds()
        saga_duration.labels(state.saga, state.status.value).observe(seconds)


def serve(port: int, host: str = "0.0.0.0") -> int:  # noqa: S104 - scraped from outside
    """Expose the metrics on http://host:port/metrics (a daemon thread); port 0 takes a free
    one. Returns the port."""
    server, _ = start_http_server(port, addr=host)
    bound: int = server.server_port
    return bound
