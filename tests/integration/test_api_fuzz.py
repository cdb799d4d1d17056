"""No input gets a 500: random bodies, paths and parameters against the real app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from orchestrator.api.app import create_app
from orchestrator.config import Settings

pytestmark = pytest.mark.integration

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: __import__("json").dumps(v).encode()),
    st.fixed_dictionaries(
        {"input": json_values},
        optional={
            "version": json_values,
            "instance_id": json_values,
            "correlation_key": json_values,
        },
    ).map(lambda v: __import__("json").dumps(v).encode()),
)
segments = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="/?#%"),
    max_size=30,
)
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


@FUZZ
@given(
    body=bodies,
    name=st.sampled_from(["order", "nope"]) | segments,
    key=st.none() | st.text(max_size=30),
)
async def test_start_never_fails_with_500(
    client: AsyncTestClient[Any], body: bytes, name: str, key: str | None
) -> None:
    headers = {"content-type": "application/json"}
    if key is not None and key.isprintable() and key.isascii():
        headers["Idempotency-Key"] = key
    response = await client.post(f"/v1/sagas/{name}", content=body, headers=headers)

    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")


@FUZZ
@given(body=bodies)
async def test_register_never_fails_with_500(client: AsyncTestClient[Any], body: bytes) -> None:
    response = await client.post(
        "/v1/definitions", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code < 500, response.text


@FUZZ
@given(
    instance=segments,
    action=st.sampled_from(["", "/history", "/cancel", "/retry"]),
    params=st.dictionaries(
        st.sampled_from(
            ["saga", "status", "limit", "cursor", "after_seq", "created_after", "correlation_key"]
        ),
        st.text(max_size=20),
        max_size=3,
    ),
)
async def test_reads_and_operations_never_fail_with_500(
    client: AsyncTestClient[Any], instance: str, action: str, params: dict[str, str]
) -> None:
    method = "POST" if action in ("/cancel", "/retry") else "GET"
    path = f"/v1/instances/{instance}{action}" if instance or action else "/v1/instances"
    response = await client.request(method, path, params=params)

    assert response.status_code < 500, response.text
