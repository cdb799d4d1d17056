"""`POST /v1/sagas/{name}/batch`: many starts in one request, each answered as a single start
would be, on the real database and broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from orchestrator.api.app import create_app
from orchestrator.api.schema import MAX_BATCH_STARTS
from orchestrator.config import Settings
from tests.support.probes import Probe
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

ORDER = {"order_id": "A", "amount": 1}
PROBLEM = "application/problem+json"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


async def _batch(client: AsyncTestClient[Any], starts: list[dict[str, Any]]) -> list[Any]:
    response = await client.post("/v1/sagas/order/batch", json={"starts": starts})
    assert response.status_code == 200, response.text
    results: list[Any] = response.json()["results"]
    assert len(results) == len(starts)
    return results


async def test_each_start_is_answered_as_alone_and_only_the_good_ones_are_written(
    client: AsyncTestClient[Any], probe: Probe
) -> None:
    earlier = await client.post(
        "/v1/sagas/order", json={"input": ORDER}, headers={"Idempotency-Key": "k"}
    )
    assert earlier.status_code == 201

    results = await _batch(
        client,
        [
            {"input": ORDER},
            {"input": {"order_id": "", "amount": -3}},  # refused by the input schema
            {"input": ORDER, "version": 9},  # no such version
            {"input": {**ORDER, "amount": 9}, "idempotency_key": "k"},  # another request's key
            {"input": ORDER, "idempotency_key": "k"},  # the same request again
            {"input": {**ORDER, "order_id": "B"}, "correlation_key": "customer-7"},
        ],
    )

    assert [r["status"] for r in results] == [201, 422, 404, 409, 200, 201]
    assert results[4]["instance"]["id"] == earlier.json()["id"]
    invalid = results[1]["problem"]
    assert invalid["type"] == "urn:warren:problem:input-invalid"
    assert len(invalid["errors"]) == 2
    assert "version 9" in results[2]["problem"]["detail"]
    assert results[3]["problem"]["type"] == "urn:warren:problem:idempotency-conflict"
    for made in (results[0], results[5]):
        assert made["problem"] is None
        assert made["instance"]["status"] == "running"
        assert await probe.status(made["instance"]["id"]) == "running"
    assert all(r["instance"] is None for r in results[1:4])
    assert await probe.count("warren.instances") == 3  # the earlier one and two new ones


async def test_a_batch_sent_again_starts_nothing_twice(
    client: AsyncTestClient[Any], probe: Probe
) -> None:
    starts = [
        {"input": {**ORDER, "order_id": f"R-{n}"}, "idempotency_key": f"r-{n}"} for n in range(150)
    ]

    first = await _batch(client, starts)
    again = await _batch(client, starts)

    assert [r["status"] for r in first] == [201] * 150  # three groups of starts
    assert [r["status"] for r in again] == [200] * 150
    assert [r["instance"]["id"] for r in again] == [r["instance"]["id"] for r in first]
    assert await probe.count("warren.instances") == 150
    # One first command each, published once.
    payments = probe.settings.topology.pool_queue("payments")
    assert await wait_for(lambda: probe.queue(payments), lambda q: q[0] == 150) == (150, 0)
    await wait_for(lambda: probe.count("warren.outbox"), lambda n: n == 0, what="rows deleted")


async def test_a_batch_for_an_unknown_saga_is_a_404_problem_and_writes_nothing(
    client: AsyncTestClient[Any], probe: Probe
) -> None:
    response = await client.post("/v1/sagas/nowhere/batch", json={"starts": [{"input": ORDER}]})

    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"] == "urn:warren:problem:saga-not-found"
    assert await probe.count("warren.instances") == 0


@pytest.mark.parametrize(
    "body",
    [
        {"starts": []},
        {"starts": [{"input": ORDER}] * (MAX_BATCH_STARTS + 1)},
        {"starts": [{"input": ORDER, "colour": "red"}]},
        {"starts": [{"input": ORDER, "idempotency_key": ""}]},
        {"starts": [{"input": ORDER, "idempotency_key": "a\u0000b"}]},
        {"start": [{"input": ORDER}]},
    ],
    ids=["empty", "too-many", "unknown-field", "empty-key", "nul-in-key", "misspelt"],
)
async def test_a_batch_not_of_the_documented_shape_is_422_and_writes_nothing(
    client: AsyncTestClient[Any], probe: Probe, body: dict[str, Any]
) -> None:
    response = await client.post("/v1/sagas/order/batch", json=body)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"] == "urn:warren:problem:request-invalid"
    assert await probe.count("warren.instances") == 0


async def test_one_key_twice_in_a_batch_makes_one_instance(
    client: AsyncTestClient[Any], probe: Probe
) -> None:
    results = await _batch(
        client,
        [
            {"input": ORDER, "idempotency_key": "twice"},
            {"input": ORDER, "idempotency_key": "twice"},
            {"input": {**ORDER, "amount": 2}, "idempotency_key": "twice"},
        ],
    )

    assert [r["status"] for r in results] == [201, 200, 409]
    assert results[0]["instance"]["id"] == results[1]["instance"]["id"]
    assert await probe.count("warren.instances") == 1
