"""The operator API: idempotent starts, listing and paging, history, cancel, retry,
definitions, pools and health, on the real database and broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.api.app import create_app
from orchestrator.config import Settings
from tests.apps.sagas import refund, refund_changed
from tests.support.probes import Probe

pytestmark = pytest.mark.integration

ORDER = {"order_id": "A", "amount": 1}


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


async def _start(client: AsyncTestClient[Any], **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/sagas/order", json={"input": ORDER, **body})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


# ---- idempotent starts ----------------------------------------------------------------------


async def test_same_key_and_body_returns_the_same_instance(
    client: AsyncTestClient[Any], probe: Probe
) -> None:
    headers = {"Idempotency-Key": "order-A"}
    first = await client.post("/v1/sagas/order", json={"input": ORDER}, headers=headers)
    again = await client.post("/v1/sagas/order", json={"input": ORDER}, headers=headers)

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert await probe.count("warren.instances") == 1
    ready, _ = await probe.queue(probe.settings.topology.pool_queue("payments"))
    assert ready == 1  # one first command, not two


async def test_same_key_with_another_body_is_409(
    client: AsyncTestClient[Any], probe: Probe
) -> None:
    headers = {"Idempotency-Key": "order-A"}
    await client.post("/v1/sagas/order", json={"input": ORDER}, headers=headers)

    response = await client.post(
        "/v1/sagas/order", json={"input": {**ORDER, "amount": 2}}, headers=headers
    )

    assert response.status_code == 409
    assert response.json()["type"] == "urn:warren:problem:idempotency-conflict"
    assert await probe.count("warren.instances") == 1


async def test_concurrent_starts_with_one_key_make_one_instance(
    settings: Settings, probe: Probe
) -> None:
    async with AsyncTestClient(app=create_app(settings)) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/v1/sagas/order", json={"input": ORDER}, headers={"Idempotency-Key": "race"}
                )
                for _ in range(20)
            )
        )

    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await probe.count("warren.instances") == 1
    assert await probe.count("warren.history") == 2  # saga_started + step_dispatched, once


async def test_concurrent_starts_sharing_a_transaction_each_get_their_own_answer(
    settings: Settings, probe: Probe
) -> None:
    """Starts made together go in shared transactions (group commit): one refused for its
    input, its saga or its key costs only itself."""
    async with AsyncTestClient(app=create_app(settings)) as client:
        await client.post(
            "/v1/sagas/order", json={"input": ORDER}, headers={"Idempotency-Key": "k"}
        )
        asked = [("order", {"input": ORDER}, None)] * 8 + [
            ("order", {"input": {"order_id": 7}}, None),  # refused by the input schema
            ("nowhere", {"input": ORDER}, None),  # no such saga
            ("order", {"input": {**ORDER, "amount": 9}}, "k"),  # the key of another request
            ("order", {"input": ORDER}, "k"),  # the same request again
        ]
        responses = await asyncio.gather(
            *(
                client.post(
                    f"/v1/sagas/{saga}",
                    json=body,
                    headers={"Idempotency-Key": key} if key else {},
                )
                for saga, body, key in asked
            )
        )

    assert [r.status_code for r in responses] == [201] * 8 + [422, 404, 409, 200]
    assert await probe.count("warren.instances") == 9
    assert await probe.count("warren.history") == 18  # saga_started + step_dispatched each


async def test_caller_chosen_instance_id_is_idempotent(client: AsyncTestClient[Any]) -> None:
    chosen = str(uuid.uuid4())
    first = await client.post("/v1/sagas/order", json={"input": ORDER, "instance_id": chosen})
    again = await client.post("/v1/sagas/order", json={"input": ORDER, "instance_id": chosen})
    other = await client.post(
        "/v1/sagas/order", json={"input": {**ORDER, "amount": 5}, "instance_id": chosen}
    )

    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert first.json()["id"] == again.json()["id"] == chosen


async def test_keys_are_scoped_per_saga(client: AsyncTestClient[Any], engine: AsyncEngine) -> None:
    from orchestrator.service.registry import register_saga

    await register_saga(engine, refund)
    headers = {"Idempotency-Key": "k"}
    a = await client.post("/v1/sagas/order", json={"input": ORDER}, headers=headers)
    b = await client.post("/v1/sagas/refund", json={"input": {}}, headers=headers)

    assert (a.status_code, b.status_code) == (201, 201)


# ---- listing, paging, history --------------------------------------------------------------


async def test_list_filters_by_saga_status_and_correlation_key(
    client: AsyncTestClient[Any],
) -> None:
    tagged = await _start(client, correlation_key="customer-7")
    await _start(client)

    by_key = (await client.get("/v1/instances", params={"correlation_key": "customer-7"})).json()
    running = (
        await client.get("/v1/instances", params={"saga": "order", "status": "running"})
    ).json()
    done = (await client.get("/v1/instances", params={"status": "completed"})).json()

    assert [i["id"] for i in by_key["items"]] == [tagged["id"]]
    assert by_key["items"][0]["correlation_key"] == "customer-7"
    assert len(running["items"]) == 2
    assert done["items"] == []


async def test_list_filters_by_time_range(client: AsyncTestClient[Any]) -> None:
    first = await _start(client)
    second = await _start(client)

    after_first = (
        await client.get("/v1/instances", params={"created_after": second["created_at"]})
    ).json()
    before_second = (
        await client.get("/v1/instances", params={"created_before": second["created_at"]})
    ).json()

    assert [i["id"] for i in after_first["items"]] == [second["id"]]
    assert [i["id"] for i in before_second["items"]] == [first["id"]]


async def test_pagination_is_exact_while_instances_are_written(
    client: AsyncTestClient[Any],
) -> None:
    existing = [(await _start(client))["id"] for _ in range(25)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/instances", params=params)).json()
        seen.extend(item["id"] for item in page["items"])
        await _start(client)  # a newer instance lands between every two pages
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == list(reversed(existing))  # newest first, none skipped, none twice


@pytest.mark.parametrize(
    "params",
    [
        {"status": "sleeping"},
        {"limit": 0},
        {"limit": 501},
        {"created_after": "yesterday"},
    ],
)
async def test_bad_list_parameters_are_4xx_problems(
    client: AsyncTestClient[Any], params: dict[str, Any]
) -> None:
    response = await client.get("/v1/instances", params=params)

    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_forged_cursor_is_400(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/v1/instances", params={"cursor": "bm9wZQ"})

    assert response.status_code == 400
    assert response.json()["type"] == "urn:warren:problem:cursor-invalid"


async def test_history_lists_events_in_order_with_paging(client: AsyncTestClient[Any]) -> None:
    started = await _start(client)

    page = (await client.get(f"/v1/instances/{started['id']}/history")).json()
    first = (await client.get(f"/v1/instances/{started['id']}/history", params={"limit": 1})).json()
    rest = (
        await client.get(
            f"/v1/instances/{started['id']}/history", params={"after_seq": first["next_after_seq"]}
        )
    ).json()

    assert [(e["seq"], e["type"]) for e in page["items"]] == [
        (1, "saga_started"),
        (2, "step_dispatched"),
    ]
    assert page["items"][1]["pool"] == "payments"
    assert page["items"][1]["data"] == {"command": "reserve_credit"}
    assert [e["seq"] for e in first["items"] + rest["items"]] == [1, 2]
    missing = await client.get(f"/v1/instances/{uuid.uuid4()}/history")
    assert missing.status_code == 404


# ---- cancel and retry -----------------------------------------------------------------------


async def test_cancel_waits_for_the_step_in_flight(client: AsyncTestClient[Any]) -> None:
    started = await _start(client)

    response = await client.post(
        f"/v1/instances/{started['id']}/cancel", json={"reason": "customer changed mind"}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "compensating"
    assert body["failure"] == {
        "type": "Cancelled",
        "message": "customer changed mind",
        "retryable": False,
    }
    assert body["steps"][0]["status"] == "running"  # its reply decides whether it is undone
    history = (await client.get(f"/v1/instances/{started['id']}/history")).json()["items"]
    assert "saga_cancel_requested" in [e["type"] for e in history]
    again = await client.post(f"/v1/instances/{started['id']}/cancel")
    assert again.status_code == 200  # idempotent while compensating


async def test_cancel_of_an_ended_instance_is_409(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    started = await _start(client)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE warren.instances SET state = jsonb_set(state, '{status}', '\"completed\"')"
            )
        )

    response = await client.post(f"/v1/instances/{started['id']}/cancel")

    assert response.status_code == 409
    assert response.json()["type"] == "urn:warren:problem:invalid-state"


async def test_retry_of_an_instance_that_is_not_failed_is_409(client: AsyncTestClient[Any]) -> None:
    started = await _start(client)

    response = await client.post(f"/v1/instances/{started['id']}/retry")

    assert response.status_code == 409
    assert "only failed instances" in response.json()["detail"]


async def test_operations_on_unknown_instances_are_404(client: AsyncTestClient[Any]) -> None:
    for path in ("cancel", "retry"):
        response = await client.post(f"/v1/instances/{uuid.uuid4()}/{path}")
        assert response.status_code == 404


# ---- definitions, pools, health -------------------------------------------------------------


async def test_register_and_read_definitions(client: AsyncTestClient[Any]) -> None:
    created = await client.post("/v1/definitions", content=refund.to_json())
    unchanged = await client.post("/v1/definitions", content=refund.to_json())
    conflict = await client.post("/v1/definitions", content=refund_changed.to_json())

    assert (created.status_code, unchanged.status_code, conflict.status_code) == (201, 200, 409)
    assert created.json()["outcome"] == "created"
    assert unchanged.json()["outcome"] == "unchanged"
    assert conflict.json()["type"] == "urn:warren:problem:definition-conflict"

    listed = (await client.get("/v1/definitions")).json()["items"]
    assert [(d["name"], d["latest_version"]) for d in listed] == [("order", 1), ("refund", 1)]
    detail = (await client.get("/v1/definitions/refund")).json()
    assert detail["versions"][0]["body"]["steps"][0]["compensation"]["command"] == "recharge"
    assert (await client.get("/v1/definitions/nope")).status_code == 404


@pytest.mark.parametrize(
    ("body", "slug"),
    [
        (b'{"name": "x", "version": 1, "steps": []}', "definition-invalid"),
        (
            b'{"name": "x", "version": 1, "steps": [{"kind": "step", "name": "a", "pool": "p", "oops": 1}]}',
            "request-invalid",
        ),
        (b'{"name": "x"}', "request-invalid"),
    ],
)
async def test_invalid_definitions_are_422(
    client: AsyncTestClient[Any], body: bytes, slug: str
) -> None:
    response = await client.post("/v1/definitions", content=body)

    assert response.status_code == 422, response.text
    assert response.json()["type"] == f"urn:warren:problem:{slug}"


async def test_pools_show_depth_in_flight_and_recent_activity(client: AsyncTestClient[Any]) -> None:
    await _start(client)
    await _start(client)

    items = {p["name"]: p for p in (await client.get("/v1/pools")).json()["items"]}

    assert set(items) == {"payments", "inventory", "shipping"}
    assert items["payments"]["ready"] == 2
    assert items["payments"]["consumers"] == 0
    assert items["payments"]["in_flight"] == 2
    assert items["payments"]["dispatched_recently"] == 2
    assert items["inventory"]["ready"] is None  # no command sent there yet: no queue
    assert items["inventory"]["in_flight"] == 0


async def test_health(client: AsyncTestClient[Any]) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": "ok", "broker": "ok"}


async def test_readiness_is_503_when_the_database_is_unreachable(amqp_url: str) -> None:
    broken = Settings(
        database_url="postgresql://postgres@127.0.0.1:1/none", amqp_url=amqp_url, namespace="nodb"
    )
    async with AsyncTestClient(app=create_app(broken)) as client:
        response = await client.get("/health/ready")

    assert response.status_code == 503
    assert response.json()["database"].startswith("unavailable")
    assert response.json()["broker"] == "ok"
