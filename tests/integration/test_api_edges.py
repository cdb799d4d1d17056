"""Inputs at the edge of what Postgres stores, and an OpenAPI document that tells the truth:
every refusal is a 4xx problem, never a 500, and the document lists it."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.api.app import create_app
from orchestrator.config import Settings
from orchestrator.definitions import RetryPolicy, Saga, Step
from orchestrator.errors import DefinitionError
from orchestrator.persistence.instances import encode_cursor
from tests.support.probes import Probe

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
ORDER = {"order_id": "A", "amount": 1}
NOT_A_DEAD_LETTER = 2**63  # one past bigint


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def _definition(**fields: Any) -> dict[str, Any]:
    step = {"kind": "step", "name": "pay", "pool": "payments"}
    return {"name": "edge", "version": 1, "steps": [step], **fields}


# ---- NUL characters (bug 1) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/definitions/%00"),
        ("POST", "/v1/sagas/%00"),
        ("POST", "/v1/sagas/a%00b"),
        ("GET", "/v1/definitions/" + "x" * 5000),
    ],
)
async def test_a_path_name_that_cannot_exist_is_404(
    client: AsyncTestClient[Any], method: str, path: str
) -> None:
    response = await client.request(method, path, json={"input": {}})

    assert _problem(response, 404)["type"] == "urn:warren:problem:saga-not-found"


@pytest.mark.parametrize("field", ["saga", "correlation_key"])
async def test_nul_in_a_query_value_is_422_naming_it(
    client: AsyncTestClient[Any], field: str
) -> None:
    response = await client.get("/v1/instances", params={field: "a\x00b"})

    problem = _problem(response, 422)
    assert problem["type"] == "urn:warren:problem:request-invalid"
    assert field in json.dumps(problem["errors"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": {"order_id": "a\x00b", "amount": 1}}, "order_id"),
        ({"input": {"order_id": "A", "amount": 1, "a\x00b": 1}}, r"'a\x00b'"),
        ({"input": {**ORDER, "notes": [["a\x00b"]]}}, "notes/0/0"),
        ({"input": ORDER, "correlation_key": "a\x00b"}, "correlation_key"),
        ({"input": ORDER, "correlation_key": "k" * 5000}, "correlation_key"),
    ],
)
async def test_nul_in_a_start_is_422_naming_the_field_and_writes_nothing(
    client: AsyncTestClient[Any], probe: Probe, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/sagas/order", json=body)

    problem = _problem(response, 422)
    assert field in problem["detail"] + " ".join(map(str, problem["errors"])), problem
    assert await probe.count("warren.instances") == 0


async def test_input_nested_too_deeply_is_refused(
    client: AsyncTestClient[Any], probe: Probe
) -> None:
    for depth in (200, 5000):
        nested = "[" * depth + "]" * depth
        body = f'{{"input": {{"order_id": "A", "amount": 1, "deep": {nested}}}}}'
        response = await client.post(
            "/v1/sagas/order", content=body, headers={"content-type": "application/json"}
        )

        assert 400 <= response.status_code < 500, (depth, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)
    assert await probe.count("warren.instances") == 0


async def test_nul_in_a_cancel_reason_is_422(client: AsyncTestClient[Any]) -> None:
    started = (await client.post("/v1/sagas/order", json={"input": ORDER})).json()

    response = await client.post(f"/v1/instances/{started['id']}/cancel", json={"reason": "a\x00b"})

    assert "reason" in json.dumps(_problem(response, 422)["errors"])
    assert (await client.get(f"/v1/instances/{started['id']}")).json()["status"] == "running"


@pytest.mark.parametrize(
    "fields",
    [
        {"description": "a\x00b"},
        {"input_schema": {"type": "object", "description": "a\x00b"}},
        {"input_schema": {"type": "object", "properties": {"a\x00b": {}}}},
    ],
)
async def test_nul_in_a_definition_is_422(
    client: AsyncTestClient[Any], fields: dict[str, Any]
) -> None:
    response = await client.post("/v1/definitions", json=_definition(**fields))

    assert _problem(response, 422)["type"] == "urn:warren:problem:definition-invalid"


# ---- integers and dates beyond the columns (bug 8) --------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/v1/dead-letters/{NOT_A_DEAD_LETTER}"),
        ("DELETE", f"/v1/dead-letters/{NOT_A_DEAD_LETTER}"),
        ("POST", f"/v1/dead-letters/{NOT_A_DEAD_LETTER}/replay"),
        ("GET", "/v1/dead-letters/0"),
    ],
)
async def test_a_dead_letter_id_beyond_bigint_is_404(
    client: AsyncTestClient[Any], method: str, path: str
) -> None:
    _problem(await client.request(method, path), 404)


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/dead-letters", {"before_id": str(NOT_A_DEAD_LETTER)}, "before_id"),
        ("/v1/instances", {"created_after": "0001-01-01T00:00:00+14:00"}, "created_after"),
        ("/v1/instances", {"created_before": "9999-12-31T23:59:59-14:00"}, "created_before"),
        ("/v1/instances", {"updated_after": "0001-01-01T00:00:00+14:00"}, "updated_after"),
        ("/v1/instances", {"updated_before": "9999-12-31T23:59:59-14:00"}, "updated_before"),
        ("/v1/instances", {"updated_before": "0.5"}, "updated_before"),  # not a date-time
    ],
)
async def test_a_query_value_beyond_its_column_is_422_naming_it(
    client: AsyncTestClient[Any], path: str, params: dict[str, str], field: str
) -> None:
    problem = _problem(await client.get(path, params=params), 422)

    assert field in json.dumps(problem["errors"])


async def test_history_after_seq_beyond_int4_is_422(client: AsyncTestClient[Any]) -> None:
    started = (await client.post("/v1/sagas/order", json={"input": ORDER})).json()

    response = await client.get(
        f"/v1/instances/{started['id']}/history", params={"after_seq": str(2**31)}
    )

    assert "after_seq" in json.dumps(_problem(response, 422)["errors"])


async def test_a_hand_made_cursor_holding_an_unstorable_date_is_cursor_invalid(
    client: AsyncTestClient[Any],
) -> None:
    from datetime import datetime, timedelta, timezone
    from uuid import uuid4

    from orchestrator.persistence.instances import InstanceRow

    east = timezone(timedelta(hours=14))
    forged = InstanceRow(
        id=uuid4(),
        saga="order",
        version=1,
        status="running",
        correlation_key=None,
        created_at=datetime(1, 1, 1, tzinfo=east),
        updated_at=datetime(1, 1, 1, tzinfo=east),
    )

    response = await client.get("/v1/instances", params={"cursor": encode_cursor(forged)})

    assert _problem(response, 400)["type"] == "urn:warren:problem:cursor-invalid"


async def test_a_version_beyond_int4_is_422(client: AsyncTestClient[Any], probe: Probe) -> None:
    start = await client.post("/v1/sagas/order", json={"input": ORDER, "version": 2**31})
    register = await client.post("/v1/definitions", json=_definition(version=2**31))

    assert "version" in json.dumps(_problem(start, 422))
    assert "version" in json.dumps(_problem(register, 422))
    assert await probe.count("warren.instances") == 0


# ---- durations (bug 9) ------------------------------------------------------------------------


HUGE = 1e308


@pytest.mark.parametrize(
    "fields",
    [
        {"deadline_seconds": HUGE},
        {"steps": [{"kind": "step", "name": "pay", "pool": "p", "timeout_seconds": HUGE}]},
        {"steps": [{"kind": "step", "name": "pay", "pool": "p", "delay_seconds": HUGE}]},
        {
            "steps": [
                {
                    "kind": "step",
                    "name": "pay",
                    "pool": "p",
                    "retry": {"max_interval_seconds": HUGE},
                }
            ]
        },
        {
            "steps": [
                {
                    "kind": "step",
                    "name": "pay",
                    "pool": "p",
                    "compensation": {"command": "undo", "timeout_seconds": HUGE},
                }
            ]
        },
    ],
)
async def test_a_duration_past_the_bound_is_refused_at_registration(
    client: AsyncTestClient[Any], fields: dict[str, Any]
) -> None:
    response = await client.post("/v1/definitions", json=_definition(**fields))

    _problem(response, 422)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Saga(name="s", version=1, steps=[Step(name="a", pool="p")], deadline_seconds=HUGE),
        lambda: Saga(name="s", version=1, steps=[Step(name="a", pool="p", delay_seconds=HUGE)]),
        lambda: Saga(
            name="s",
            version=1,
            steps=[Step(name="a", pool="p", retry=RetryPolicy(max_elapsed_seconds=HUGE))],
        ),
    ],
)
def test_a_duration_past_the_bound_is_refused_when_built(build: Any) -> None:
    with pytest.raises(DefinitionError, match="at most"):
        build()


# ---- remote $ref (bug 10) ---------------------------------------------------------------------


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on a local port that records every request it gets."""
    calls: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            calls.append(self.path)
            body = b'{"type": "object"}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/schema.json", calls
    finally:
        server.shutdown()
        server.server_close()


async def test_a_remote_ref_is_refused_at_registration_and_never_fetched(
    client: AsyncTestClient[Any], recorder: tuple[str, list[str]]
) -> None:
    url, calls = recorder
    schemas = [
        {"$ref": url},
        {"type": "object", "properties": {"a": {"$ref": url + "#/x"}}},
        {"$defs": {"a": {"$dynamicRef": url}}},
    ]
    for schema in schemas:
        response = await client.post("/v1/definitions", json=_definition(input_schema=schema))

        problem = _problem(response, 422)
        assert problem["type"] == "urn:warren:problem:definition-invalid"
        assert "$ref" in problem["detail"] or "Ref" in problem["detail"]
    assert calls == []


async def test_a_local_ref_still_validates(client: AsyncTestClient[Any]) -> None:
    schema = {
        "$defs": {"amount": {"type": "number", "minimum": 1}},
        "type": "object",
        "properties": {"amount": {"$ref": "#/$defs/amount"}},
    }
    assert (
        await client.post("/v1/definitions", json=_definition(input_schema=schema))
    ).status_code == 201

    refused = await client.post("/v1/sagas/edge", json={"input": {"amount": 0}})
    accepted = await client.post("/v1/sagas/edge", json={"input": {"amount": 2}})

    assert _problem(refused, 422)["type"] == "urn:warren:problem:input-invalid"
    assert accepted.status_code == 201


async def test_a_stored_remote_ref_is_never_fetched_at_start(
    client: AsyncTestClient[Any], engine: AsyncEngine, recorder: tuple[str, list[str]]
) -> None:
    """A definition registered before remote refs were refused: starts are 422, no fetch."""
    url, calls = recorder
    body = _definition(name="legacy", input_schema={"$ref": url})
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO warren.definitions (name, version, content_hash, body) "
                "VALUES ('legacy', 1, 'x', CAST(:body AS jsonb))"
            ),
            {"body": json.dumps(body)},
        )

    response = await client.post("/v1/sagas/legacy", json={"input": {}})

    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert calls == []


# ---- the OpenAPI document (bug 11) ------------------------------------------------------------


async def test_every_error_a_route_answers_is_documented_as_a_problem(
    client: AsyncTestClient[Any],
) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    paths = document["paths"]

    def statuses(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert statuses("/v1/sagas/{name}", "post") >= {"200", "201", "400", "404", "409", "413", "422"}
    assert statuses("/v1/instances", "get") >= {"200", "400", "422"}
    assert statuses("/v1/instances/{instance_id}", "get") >= {"200", "404"}
    assert statuses("/v1/instances/{instance_id}/cancel", "post") >= {"404", "409", "422"}
    assert statuses("/v1/instances/{instance_id}/retry", "post") >= {"404", "409"}
    assert statuses("/v1/instances/{instance_id}/verification", "get") >= {"200", "404"}
    assert statuses("/v1/verifications", "get") >= {"200", "400", "422"}
    assert statuses("/v1/definitions", "post") >= {"200", "201", "409", "422"}
    assert statuses("/v1/dead-letters/{letter_id}/replay", "post") >= {"404", "409"}
    assert statuses("/health/ready", "get") >= {"200", "503"}
    for path, item in paths.items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400 and path != "/health/ready":
                    assert list(response["content"]) == [PROBLEM], (method, path, status)
                    schema = response["content"][PROBLEM]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Problem"}, (path, status)
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}


async def test_bodies_refused_for_unknown_fields_say_so(client: AsyncTestClient[Any]) -> None:
    schemas = (await client.get("/schema/openapi.json")).json()["components"]["schemas"]

    for name in ("StartBody", "CancelBody", "Saga", "Step", "RetryPolicy", "Compensation"):
        assert schemas[name]["additionalProperties"] is False, name


async def test_405_keeps_the_allow_header(client: AsyncTestClient[Any]) -> None:
    response = await client.put("/v1/definitions")

    assert _problem(response, 405)["type"] == "urn:warren:problem:method-not-allowed"
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/v1/definitions", {"GET", "POST", "OPTIONS"}),
        ("/v1/dead-letters/1", {"GET", "DELETE", "OPTIONS"}),
        ("/v1/instances", {"GET", "OPTIONS"}),
    ],
)
async def test_options_lists_every_method(
    client: AsyncTestClient[Any], path: str, methods: set[str]
) -> None:
    response = await client.options(path)

    assert response.status_code == 204
    assert set(response.headers["allow"].replace(" ", "").split(",")) == methods
