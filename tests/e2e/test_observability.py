"""Observability through the real processes: one trace per saga across the API, the
orchestrator, RabbitMQ and the workers (exported over OTLP to a receiver in the test), the
Prometheus counters moving, and JSON log lines that name their saga and trace."""

from __future__ import annotations

import json
from collections.abc import Iterator
from uuid import UUID

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.engine.state import child_instance_id
from orchestrator.service.registry import register_saga
from tests.apps.sagas import kid, parent
from tests.conftest import Stack
from tests.support.otlp import Collector, Span
from tests.support.processes import free_port
from tests.support.waiting import wait_for
from tests.unit.test_docs import ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture
def collector(stack: Stack) -> Iterator[Collector]:
    receiver = Collector()
    stack.processes.env.update(receiver.env(receiver.start()))
    yield receiver
    receiver.stop()


def _trace_of(spans: list[Span], instance_id: str) -> list[Span]:
    """Every span of the trace(s) the instance's spans belong to."""
    trace_ids = {s.trace_id for s in spans if s.attributes.get("warren.instance.id") == instance_id}
    return [s for s in spans if s.trace_id in trace_ids]


def _dangling(trace: list[Span]) -> list[Span]:
    ids = {s.span_id for s in trace}
    return [s for s in trace if s.parent_id is not None and s.parent_id not in ids]


async def test_a_compensating_saga_with_a_retry_is_one_trace_across_processes(
    stack: Stack, collector: Collector
) -> None:
    await stack.up()
    instance_id = await stack.start(
        {
            "order_id": "T-1",
            "amount": 5,
            "fail_at": "charge",
            "transient_failures": {"reserve_stock": 1},  # a retry fired by a timer
        }
    )
    assert await stack.probe.wait_terminal(instance_id) == "compensated"

    def complete() -> list[Span]:
        trace = _trace_of(collector.snapshot(), instance_id)
        names = {s.name for s in trace}
        done = "compensation release_credit" in names and any(
            s.attributes.get("warren.saga.status") == "compensated" for s in trace
        )
        return trace if done and not _dangling(trace) else []

    async def spans() -> list[Span]:
        return complete()

    trace = await wait_for(spans, timeout=30, what="the saga's spans to be exported")

    assert len({s.trace_id for s in trace}) == 1
    by_id = {s.span_id: s for s in trace}
    roots = [s for s in trace if s.parent_id is None]
    assert [(r.service, r.kind) for r in roots] == [("warren-api", "server")]

    def parent(span: Span) -> Span:
        assert span.parent_id is not None
        return by_id[span.parent_id]

    def named(name: str) -> list[Span]:
        return [s for s in trace if s.name == name]

    # The start: the request's span, then saga.start, whose command the API publishes.
    (start,) = named("saga.start")
    assert parent(start) == roots[0]
    assert start.attributes["warren.saga.name"] == "order"

    # Each command crosses from a producer in one process to a consumer in another.
    consumers = [s for s in trace if s.kind == "consumer"]
    assert {s.service for s in consumers} == {"warren-worker", "warren-orchestrator"}
    for consumed in consumers:
        sent = parent(consumed)
        assert sent.kind == "producer"
        assert sent.service != consumed.service
        assert consumed.attributes["messaging.system"] == "rabbitmq"
        assert (
            sent.attributes["messaging.message.id"] == consumed.attributes["messaging.message.id"]
        )

    # The worker's handler spans sit inside its consumer spans, with the saga's attributes.
    handlers = [s for s in trace if s.name.startswith(("step ", "compensation "))]
    assert sorted(s.name for s in handlers) == sorted(
        [
            "step reserve_credit",
            "step reserve_stock",
            "step reserve_stock",
            "step charge",
            "compensation release_stock",
            "compensation release_credit",
        ]
    )

    def above_transaction(span: Span) -> Span:
        """The parent, skipping a database transaction span in between."""
        up = parent(span)
        return parent(up) if up.kind == "client" else up

    for handler in handlers:
        assert above_transaction(handler).kind == "consumer"
        assert handler.service == "warren-worker"
        assert handler.attributes["warren.instance.id"] == instance_id
        assert handler.attributes["warren.pool"] in {"payments", "inventory"}
    stock = sorted(named("step reserve_stock"), key=lambda s: s.attributes["warren.step.attempt"])
    assert [s.error for s in stock] == [True, False]
    assert "exception" in stock[0].events
    (charge,) = named("step charge")
    assert charge.error
    assert all(not s.error for s in named("compensation release_stock"))

    # Every reply is a transition; the retry's timer fires as a child of the transition that
    # scheduled it, minutes later if need be, in the same trace.
    replies = named("saga.reply")
    assert len(replies) == 6
    assert all(above_transaction(r).kind == "consumer" for r in replies)
    assert all(r.service == "warren-orchestrator" for r in replies)
    (timer,) = [s for s in named("saga.timer") if s.attributes["warren.timer.kind"] == "retry"]
    assert parent(timer).name == "saga.reply"
    assert parent(timer).attributes["warren.step.name"] == "reserve_stock"

    # Database transactions follow the database conventions.
    transactions = [s for s in trace if s.attributes.get("db.system.name") == "postgresql"]
    assert transactions
    assert {s.kind for s in transactions} == {"client"}


async def test_a_child_saga_is_in_its_parents_trace_under_the_order_that_started_it(
    stack: Stack, collector: Collector
) -> None:
    for saga in (kid, parent):
        await register_saga(stack.probe.engine, saga)
    await stack.api()
    await stack.orchestrators()
    worker = stack.processes.worker("tests.apps.fast:worker", "fast")
    await stack.probe.wait_consumers(stack.topology.pool_queue("fast"), alive=worker.alive)
    parent_id = await stack.start({"who": "cy"}, saga="parent")
    assert await stack.probe.wait_terminal(parent_id) == "completed"
    child_id = str(child_instance_id(UUID(parent_id), "run_kid"))

    def child_started(spans: list[Span]) -> list[Span]:
        return [
            s
            for s in spans
            if s.name == "saga.start" and s.attributes.get("warren.instance.id") == child_id
        ]

    async def spans() -> list[Span]:
        trace = _trace_of(collector.snapshot(), parent_id)
        handled = {s.attributes.get("warren.instance.id") for s in trace if s.name == "step take"}
        done = child_started(trace) and child_id in handled and parent_id in handled
        return trace if done and not _dangling(trace) else []

    trace = await wait_for(spans, timeout=30, what="the parent's and the child's spans")

    assert len({s.trace_id for s in trace}) == 1  # the child's spans are in the parent's trace
    by_id = {s.span_id: s for s in trace}
    (start,) = child_started(trace)
    assert start.attributes["warren.parent.id"] == parent_id
    consumed = by_id[start.parent_id or ""]
    if consumed.kind == "client":  # the transaction it runs in
        consumed = by_id[consumed.parent_id or ""]
    assert consumed.kind == "consumer"
    assert consumed.attributes["messaging.rabbitmq.destination.routing_key"] == "warren.children"
    assert by_id[consumed.parent_id or ""].kind == "producer"  # the parent's order


async def test_a_cancel_joins_the_saga_trace_and_links_the_request(
    stack: Stack, collector: Collector
) -> None:
    await stack.api()
    await stack.orchestrators()  # no workers yet: the first step waits in its queue
    instance_id = await stack.start({"order_id": "T-2", "amount": 5})
    response = await stack.http.post(
        f"/v1/instances/{instance_id}/cancel", json={"reason": "customer changed their mind"}
    )
    assert response.status_code == 200, response.text
    await stack.workers()
    assert await stack.probe.wait_terminal(instance_id) == "compensated"

    async def cancel_spans() -> list[Span]:
        spans = collector.snapshot()
        return [s for s in spans if s.name == "saga.cancel"]

    (cancel,) = await wait_for(cancel_spans, timeout=30, what="the cancel span")
    spans = collector.snapshot()
    (start,) = [s for s in spans if s.name == "saga.start"]
    assert cancel.trace_id == start.trace_id
    requests = {s.trace_id for s in spans if s.kind == "server" and s.trace_id != start.trace_id}
    assert set(cancel.links) & requests  # linked to the cancel request's own trace


async def test_each_saga_of_a_batch_start_is_a_trace_of_its_own_linked_to_the_request(
    stack: Stack, collector: Collector
) -> None:
    await stack.up()
    response = await stack.http.post(
        "/v1/sagas/order/batch",
        json={"starts": [{"input": {"order_id": f"T-B{n}", "amount": 5}} for n in range(2)]},
    )
    assert response.status_code == 200, response.text
    ids = [result["instance"]["id"] for result in response.json()["results"]]
    for instance_id in ids:
        assert await stack.probe.wait_terminal(instance_id) == "completed"

    def complete(instance_id: str) -> list[Span]:
        trace = _trace_of(collector.snapshot(), instance_id)
        done = any(s.attributes.get("warren.saga.status") == "completed" for s in trace)
        return trace if done and not _dangling(trace) else []

    async def traces() -> list[list[Span]]:
        found = [complete(instance_id) for instance_id in ids]
        return found if all(found) else []

    first, second = await wait_for(traces, timeout=30, what="both sagas' spans")

    assert len({s.trace_id for s in first}) == len({s.trace_id for s in second}) == 1
    assert first[0].trace_id != second[0].trace_id
    (request,) = [s for s in collector.snapshot() if s.name == "POST /v1/sagas/{name}/batch"]
    for trace, instance_id in ((first, ids[0]), (second, ids[1])):
        (root,) = [s for s in trace if s.parent_id is None]
        assert (root.name, root.service) == ("saga.start", "warren-api")
        assert root.attributes["warren.instance.id"] == instance_id
        assert root.links == (request.trace_id,)
        assert {"step reserve_credit", "step ship", "saga.reply"} <= {s.name for s in trace}


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


async def test_metrics_move_on_every_process(stack: Stack) -> None:
    orchestrator_port, worker_port = free_port(), free_port()
    await stack.api()
    stack.processes.env["WARREN_METRICS_PORT"] = str(orchestrator_port)
    await stack.orchestrators()
    stack.processes.env["WARREN_METRICS_PORT"] = str(worker_port)
    await stack.workers()
    completed = await stack.start({"order_id": "M-1", "amount": 5})
    compensated = await stack.start(
        {
            "order_id": "M-2",
            "amount": 5,
            "fail_at": "charge",
            "transient_failures": {"reserve_credit": 1},
        }
    )
    assert await stack.probe.wait_terminal(completed) == "completed"
    assert await stack.probe.wait_terminal(compensated) == "compensated"

    async def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(url)
        assert response.status_code == 200
        return _samples(response.text)

    api = await scrape(f"http://127.0.0.1:{stack.probe.settings.api_port}/metrics")
    assert _value(api, "warren_sagas_started_total", saga="order") == 2
    assert _value(api, "warren_api_requests_total") >= 2

    orchestrator = await scrape(f"http://127.0.0.1:{orchestrator_port}/metrics")
    assert _value(orchestrator, "warren_sagas_ended_total", saga="order", status="completed") == 1
    assert _value(orchestrator, "warren_sagas_ended_total", saga="order", status="compensated") == 1
    assert _value(orchestrator, "warren_saga_duration_seconds_count", saga="order") == 2
    assert (
        _value(orchestrator, "warren_step_retries_total", step="reserve_credit", pool="payments")
        == 1
    )
    queue = stack.topology.orchestrator_queue
    assert _value(orchestrator, "warren_consumers", queue=queue) == 1
    assert _value(orchestrator, "warren_messages_total", queue=queue, outcome="acked") >= 10
    assert _value(orchestrator, "warren_broker_connected") == 1
    assert ("warren_outbox_backlog_messages", frozenset()) in orchestrator
    assert ("warren_outbox_oldest_age_seconds", frozenset()) in orchestrator

    worker = await scrape(f"http://127.0.0.1:{worker_port}/metrics")

    def handled(**labels: str) -> float:
        return _value(worker, "warren_step_duration_seconds_count", **labels)

    assert handled(step="reserve_credit", phase="forward", outcome="succeeded") == 2
    assert handled(step="charge", outcome="failed_for_good") == 1
    assert handled(step="reserve_credit", phase="forward", outcome="failed") == 1
    assert _value(worker, "warren_consumers", queue=stack.topology.pool_queue("payments")) == 1


async def test_logs_are_json_lines_with_saga_and_trace_and_redact_secrets(
    stack: Stack, collector: Collector
) -> None:
    stack.processes.env.update({"WARREN_LOG_PAYLOADS": "true", "WARREN_LOG_REDACT": "order_id"})
    await stack.up()
    instance_id = await stack.start(
        {"order_id": "SECRET-77", "amount": 5, "transient_failures": {"reserve_credit": 1}}
    )
    assert await stack.probe.wait_terminal(instance_id) == "completed"

    worker_log = next(p for p in stack.processes.procs if p.name.startswith("worker")).log()
    lines = [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]
    assert lines
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    failed = [line for line in lines if line["message"].startswith("handler for reserve_credit")]
    assert len(failed) == 1
    assert failed[0]["instance_id"] == instance_id
    assert failed[0]["step"] == "reserve_credit"
    assert failed[0]["attempt"] == 1
    assert len(failed[0]["trace_id"]) == 32
    received = [line for line in lines if line["message"] == "command received"]
    assert received
    assert all(line["payload"]["input"]["order_id"] == "[redacted]" for line in received)
    for proc in stack.processes.procs:
        assert "SECRET-77" not in proc.log(), proc.name


async def test_request_spans_are_named_by_route_not_by_path(
    stack: Stack, collector: Collector
) -> None:
    """One operation per route in Jaeger, however many sagas, instances and dead letters:
    the concrete path and its parameters are attributes."""
    from orchestrator.api.app import create_app

    routes = {
        f"{method} {route.path_format}"
        for route in create_app(stack.probe.settings).routes
        for method in getattr(route, "methods", ())
    }
    await stack.api()
    ids = [await stack.start({"order_id": f"N-{n}", "amount": 1}) for n in range(3)]
    unknown = "01a21b96-2d5d-70f9-a41e-b1032d1c8a2b"
    requests = [
        ("POST", "/v1/sagas/no-such-saga", 404),
        *[("GET", f"/v1/instances/{i}", 200) for i in ids],
        ("GET", f"/v1/instances/{unknown}", 404),
        *[("GET", f"/v1/instances/{i}/history", 200) for i in ids],
        ("GET", "/v1/instances?saga=order", 200),
        *[("GET", f"/v1/dead-letters/{n}", 404) for n in (1, 2, 3)],
        ("GET", "/v1/definitions/order", 200),
        ("GET", "/v1/definitions/no-such-saga", 404),
        ("GET", "/v1/no/such/route", 404),  # no route: named by its method alone
        ("GET", f"/v1/no/such/route/{unknown}", 404),
    ]
    for method, path, status in requests:
        body: dict[str, object] | None = {"input": {}} if method == "POST" else None
        response = await stack.http.request(method, path, json=body)
        assert response.status_code == status, (method, path)
    expected = 3 + len(requests)  # the starts, then the rest

    async def server_spans() -> list[Span]:
        return [s for s in collector.snapshot() if s.kind == "server"]

    spans = await wait_for(
        server_spans, lambda found: len(found) >= expected, what="a span per request"
    )

    assert len(spans) == expected
    assert {s.name for s in spans} == {
        "POST /v1/sagas/{name}",
        "GET /v1/instances/{instance_id}",
        "GET /v1/instances/{instance_id}/history",
        "GET /v1/instances",
        "GET /v1/dead-letters/{letter_id}",
        "GET /v1/definitions/{name}",
        "GET",
    }
    assert {s.name for s in spans} - {"GET"} <= routes
    for span in spans:
        if span.name != "GET":
            assert span.attributes["http.route"] == span.name.split(" ", 1)[1]
    reads = [s for s in spans if s.name == "GET /v1/instances/{instance_id}"]
    assert sorted(s.attributes["warren.path_param.instance_id"] for s in reads) == sorted(
        [*ids, unknown]
    )
    assert {s.attributes["url.path"] for s in reads} == {
        f"/v1/instances/{i}" for i in [*ids, unknown]
    }
    unrouted = [s for s in spans if s.name == "GET"]
    assert {s.attributes["url.path"] for s in unrouted} == {
        "/v1/no/such/route",
        f"/v1/no/such/route/{unknown}",
    }
    assert all("http.route" not in s.attributes for s in unrouted)
    assert not [s for s in collector.snapshot() if s.name.endswith(("http send", "http receive"))]
    # The operation the docs tell users to pick in Jaeger is one that exists.
    for document in (ROOT / "README.md", ROOT / "docs" / "observability.md"):
        assert "operation `POST /v1/sagas/{name}`" in document.read_text().replace("**", "`")
