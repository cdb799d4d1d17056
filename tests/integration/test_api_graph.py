"""A definition's graph (JSON and Mermaid) and a flow instance's view, on the real database and
broker (in-process ASGI client)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.api.app import create_app
from orchestrator.api.schema import Graph, InstanceView
from orchestrator.config import Settings
from orchestrator.definitions.graph import build, mermaid
from orchestrator.engine import Phase, StepReply
from orchestrator.messaging.topology import Topology
from orchestrator.persistence.definitions import DefinitionCache
from orchestrator.service import transitions
from orchestrator.storage.database import transaction
from tests.apps.sagas import trip

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
TOPOLOGY = Topology(namespace="graph")  # the replies' commands stay in the outbox


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.post("/v1/definitions", content=trip.to_json())
        assert response.status_code == 201, response.text
        yield client


async def test_the_graph_as_json_is_the_definitions(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/v1/definitions/trip/1/graph")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    graph = msgspec.json.decode(response.content, type=Graph)
    assert graph == build(trip)
    edges = {(e.source, e.target, e.kind, e.label) for e in graph.edges}
    assert ("book", "seats", "branch", "branch 2") in edges
    assert ("pay", "charge", "case", 'input.method == "card"') in edges
    assert ("pay", "invoice", "default", "default") in edges
    assert ("seats", "assign", "item", "each item") in edges
    assert [(e.source, e.target) for e in graph.compensation_edges] == [
        ("flight", "reserve"),
        ("invoice", "flight"),
        ("invoice", "reserve"),  # after the seats branch, which has nothing to undo
    ]


async def test_the_graph_as_mermaid_is_plain_text(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/v1/definitions/trip/1/graph", params={"format": "mermaid"})
    linear = await client.get("/v1/definitions/order/1/graph", params={"format": "mermaid"})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == mermaid(build(trip))
    assert response.text.startswith("flowchart TD\n")
    assert 'subgraph g1 ["map seats"]' in response.text
    assert linear.status_code == 200
    assert "subgraph" not in linear.text
    assert "release_credit" in linear.text


@pytest.mark.parametrize(
    ("path", "slug"),
    [
        ("/v1/definitions/nope/1/graph", "saga-not-found"),
        ("/v1/definitions/trip/2/graph", "saga-not-found"),
        ("/v1/definitions/Trip/1/graph", "saga-not-found"),
        ("/v1/definitions/trip/0/graph", "not-found"),
        ("/v1/definitions/trip/one/graph", "not-found"),
    ],
)
async def test_an_unknown_saga_or_version_is_404_problem(
    client: AsyncTestClient[Any], path: str, slug: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"] == f"urn:warren:problem:{slug}"


async def test_an_unknown_format_is_422_problem(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/v1/definitions/trip/1/graph", params={"format": "svg"})

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["type"] == "urn:warren:problem:request-invalid"
    assert [e["key"] for e in problem["errors"]] == ["format"]


async def test_the_route_is_documented_with_both_media_types(client: AsyncTestClient[Any]) -> None:
    document = (await client.get("/schema/openapi.json")).json()

    operation = document["paths"]["/v1/definitions/{name}/{version}/graph"]["get"]

    assert set(operation["responses"]) >= {"200", "404", "422"}
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/plain"}
    assert {"Graph", "GraphNode", "GraphEdge", "GraphGroup"} <= set(
        document["components"]["schemas"]
    )


async def test_a_flow_instance_shows_its_nodes_branches_and_items(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    started = await client.post(
        "/v1/sagas/trip", json={"input": {"passengers": ["ann", "bob"], "method": "card"}}
    )
    assert started.status_code == 201, started.text
    instance_id = UUID(started.json()["id"])
    for step in ("reserve", "flight", "seats[0]/assign"):  # the replies, through the writer
        reply = StepReply(step=step, phase=Phase.FORWARD, attempt=1, ok=True, result=step)
        async with transaction(engine) as conn:
            await transitions.apply_event(conn, DefinitionCache(), TOPOLOGY, instance_id, reply)

    response = await client.get(f"/v1/instances/{instance_id}")

    assert response.status_code == 200, response.text
    view = msgspec.json.decode(response.content, type=InstanceView)
    # definition order, a map's items in item order (jsonb gives the keys back in its own)
    assert [(s.name, s.status) for s in view.steps] == [
        ("reserve", "succeeded"),
        ("flight", "succeeded"),
        ("seats[0]/assign", "succeeded"),
        ("seats[1]/assign", "running"),
        ("charge", "pending"),
        ("invoice", "pending"),
    ]
    book, seats, pay = view.nodes
    assert (book.key, book.kind, book.status, book.branches, book.started) == (
        "book",
        "parallel",
        "running",
        2,
        2,
    )
    assert [(p.label, p.status) for p in book.parts] == [
        ("branch 1", "succeeded"),
        ("branch 2", "running"),
    ]
    assert (seats.key, seats.kind, seats.items, seats.started) == ("seats", "map", 2, 2)
    assert [(p.label, p.status) for p in seats.parts] == [
        ("item 0", "succeeded"),
        ("item 1", "running"),
    ]
    assert (pay.key, pay.kind, pay.status, pay.case) == ("pay", "choice", "pending", None)
    assert [(c.step, c.saga, c.version, c.status) for c in view.children] == [
        ("invoice", "invoicing", None, "pending")
    ]
    assert view.parent is None
