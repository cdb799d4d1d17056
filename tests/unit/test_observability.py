"""The observability helpers on their own: log lines, redaction, tracing set-up, metrics."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry import trace
from prometheus_client import REGISTRY

from orchestrator.config import ConfigError
from orchestrator.definitions import RetryPolicy, Saga, Step
from orchestrator.engine import Event, TimerKind
from orchestrator.observability import logs, metrics, tracing
from tests.support.engine import Run, fail, ok, timer


def _json_line(monkeypatch: pytest.MonkeyPatch, emit: logging.Logger) -> dict[str, object]:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.configure("INFO", "json")
    try:
        emit.info("something happened")
    finally:
        root.handlers[:], root.level = handlers, level
    (line,) = stream.getvalue().splitlines()
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_json_lines_carry_the_bound_saga_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    log = logging.getLogger("warren.test")
    with logs.bind(saga="order", instance_id="abc", step="charge", attempt=2, phase=None):
        line = _json_line(monkeypatch, log)

    assert line["message"] == "something happened"
    assert line["level"] == "INFO"
    assert line["logger"] == "warren.test"
    assert (line["saga"], line["instance_id"], line["step"], line["attempt"]) == (
        "order",
        "abc",
        "charge",
        2,
    )
    assert "phase" not in line
    assert "context" not in line


def test_bound_fields_end_with_their_block(monkeypatch: pytest.MonkeyPatch) -> None:
    with logs.bind(saga="order"):
        pass
    line = _json_line(monkeypatch, logging.getLogger("warren.test"))
    assert "saga" not in line


def test_redaction_reaches_nested_fields_in_any_case() -> None:
    payload = {"card": {"CVV": "123", "last4": "4242"}, "items": [{"Password": "x"}], "n": 1}

    assert logs.redact(payload, frozenset({"cvv", "password"})) == {
        "card": {"CVV": logs.REDACTED, "last4": "4242"},
        "items": [{"Password": logs.REDACTED}],
        "n": 1,
    }


def test_payloads_are_not_logged_unless_asked(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("warren.test")
    with caplog.at_level(logging.INFO):
        logs.PayloadLog(enabled=False).log(log, "command received", {"token": "t"})
        logs.PayloadLog(enabled=True).log(log, "command received", {"token": "t", "a": 1})

    (record,) = caplog.records
    assert record.payload == {"token": logs.REDACTED, "a": 1}  # type: ignore[attr-defined]


def test_tracing_stays_off_without_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    tracing.configure("warren-test")

    assert tracing._provider is None
    with tracing.span("saga.start") as span:
        assert not span.is_recording()


def test_a_grpc_exporter_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ConfigError, match="http/protobuf"):
        tracing.configure("warren-test")
    assert tracing._provider is None


def test_context_passes_through_even_when_not_tracing() -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracing.span("process q", parent=tracing.extract({"traceparent": traceparent})):
        assert tracing.current_traceparent() == traceparent
        assert tracing.trace_ids() == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert not trace.get_current_span().get_span_context().is_valid


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


SAGA = Saga(
    name="metered",
    version=1,
    steps=[
        Step(name="a", pool="p", retry=RetryPolicy(max_attempts=2, initial_interval_seconds=0)),
        Step(name="b", pool="q"),
    ],
)


def test_metrics_count_retries_and_the_end_of_a_saga_once() -> None:
    retries = {"saga": "metered", "step": "a", "pool": "p", "phase": "forward"}
    ended = {"saga": "metered", "status": "completed"}
    retries_before = _sample("warren_step_retries_total", **retries)
    ended_before = _sample("warren_sagas_ended_total", **ended)

    run = Run(SAGA)
    run.start()
    run.advance(1)
    events: list[Event] = [
        fail("a"),
        timer(TimerKind.RETRY, "a", 1),
        ok("a", attempt=2),
        ok("b"),
        ok("b"),  # a late copy: ignored
    ]
    for event in events:
        metrics.observe_transition(run.send(event))

    assert run.status.value == "completed"
    assert _sample("warren_step_retries_total", **retries) == retries_before + 1
    assert _sample("warren_sagas_ended_total", **ended) == ended_before + 1
