"""The HTTP API's contract on the real database and broker (in-process ASGI client)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from orchestrator.api.app import create_app
from orchestrator.config import Settings
from tests.support.probes import Probe
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


async def test_start_returns_201_with_id_and_status(
    client: AsyncTestClient[Any], probe: Probe
) -> None:
    response = await client.post("/v1/sagas/order", json={"input": {"order_id": "A", "amount": 1}})

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "running"
    assert body["saga"] == "order"
    assert body["version"] == 1
    assert await probe.status(body["id"]) == "running"
    # the first command was published right after the commit (its row is deleted just after)
    ready, _ = await probe.queue(probe.settings.topology.pool_queue("payments"))
    assert ready == 1
    await wait_for(lambda: probe.count("warren.outbox"), lambda n: n == 0, what="row deleted")


async def test_read_instance_shows_every_step(client: AsyncTestClient[Any]) -> None:
    started = (
        await client.post("/v1/sagas/order", json={"input": {"order_id": "A", "amount": 1}})
    ).json()

    body = (await client.get(f"/v1/instances/{started['id']}")).json()

    assert body["id"] == started["id"]
    assert [(s["name"], s["pool"], s["status"], s["attempts"]) for s in body["steps"]] == [
        ("reserve_credit", "payments", "running", 1),
        ("reserve_stock", "inventory", "pending", 0),
        ("charge", "payments", "pending", 0),
        ("ship", "shipping", "pending", 0),
    ]
    assert body["steps"][0]["compensation"]["command"] == "release_credit"
    assert body["steps"][3]["compensation"] is None


@pytest.mark.parametrize(
    ("path", "slug"),
    [
        ("/v1/instances/01a21b96-2d5d-70f9-a41e-b1032d1c8a2b", "instance-not-found"),
        ("/v1/instances/not-a-uuid", "instance-not-found"),
    ],
)
async def test_unknown_instance_is_404_problem(
    client: AsyncTestClient[Any], path: str, slug: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"] == f"urn:warren:problem:{slug}"


async def test_unknown_saga_is_404_problem_and_writes_nothing(
    client: AsyncTestClient[Any], probe: Probe
) -> None:
    response = await client.post("/v1/sagas/nope", json={"input": {}})

    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["type"] == "urn:warren:problem:saga-not-found"
    assert "nope" in problem["detail"]
    assert await probe.count("warren.instances") == 0


async def test_body_that_does_not_parse_is_400_problem(
    client: AsyncTestClient[Any], probe: Probe
) -> None:
    response = await client.post(
        "/v1/sagas/order", content=b"{not json", headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"] == "urn:warren:problem:request-malformed"
    assert await probe.count("warren.instances") == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"input": {"order_id": "A", "amount": 1}, "surprise": true}',
        b'{"input": {"order_id": "A", "amount": 1}, "version": "one"}',
        b"[]",
    ],
)
async def test_invalid_body_is_422_problem_and_writes_nothing(
    client: AsyncTestClient[Any], probe: Probe, body: bytes
) -> None:
    response = await client.post(
        "/v1/sagas/order", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"] == "urn:warren:problem:request-invalid"
    assert await probe.count("warren.instances") == 0
    assert await probe.count("warren.outbox") == 0


async def test_input_failing_the_schema_is_422_with_each_error(
    client: AsyncTestClient[Any], probe: Probe
) -> None:
    response = await client.post("/v1/sagas/order", json={"input": {"order_id": "", "amount": -3}})

    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "urn:warren:problem:input-invalid"
    assert len(problem["errors"]) == 2
    assert any(error.startswith("amount:") for error in problem["errors"])
    assert await probe.count("warren.instances") == 0


async def test_unknown_version_is_404(client: AsyncTestClient[Any]) -> None:
    response = await client.post(
        "/v1/sagas/order", json={"input": {"order_id": "A", "amount": 1}, "version": 9}
    )

    assert response.status_code == 404
    assert "version 9" in response.json()["detail"]


async def test_body_over_the_limit_is_413_problem(
    client: AsyncTestClient[Any], probe: Probe
) -> None:
    big = {"input": {"order_id": "A", "amount": 1, "items": ["x" * 1024] * 1100}}

    response = await client.post("/v1/sagas/order", json=big)

    assert response.status_code == 413
    assert response.json()["type"] == "urn:warren:problem:request-too-large"
    assert await probe.count("warren.instances") == 0


async def test_openapi_documents_the_routes(client: AsyncTestClient[Any]) -> None:
    schema = (await client.get("/schema/openapi.json")).json()

    assert {"/v1/sagas/{name}", "/v1/instances/{instance_id}"} <= set(schema["paths"])
    assert (await client.get("/schema/swagger")).status_code == 200
