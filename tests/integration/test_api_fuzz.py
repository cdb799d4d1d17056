"""No input gets a 500: random bodies, paths and parameters against the real app, with what
Postgres and JSON decoders trip over mixed in: NUL characters, lone surrogates, very long
strings, deeply nested JSON."""

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

# Text Postgres cannot store (NUL), JSON that cannot be UTF-8 (a lone surrogate, sent escaped),
# and strings past every index's row size.
nasty_text = st.sampled_from(["\x00", "a\x00b", "\ud800", "a\udfffb", "x" * 100_000]) | st.text(
    max_size=20
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.integers(min_value=2**31 - 2, max_value=2**64)
    | nasty_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=12,
)


def _nested(depth: int) -> bytes:
    return (
        b'{"input": {"order_id": "A", "amount": 1, "deep": ' + b"[" * depth + b"]" * depth + b"}}"
    )


bodies = st.one_of(
    st.binary(max_size=200),
    st.integers(min_value=1, max_value=20_000).map(_nested),
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
) | st.sampled_from(["%00", "a%00b", "%ED%A0%80", "x" * 5000, "9223372036854775808"])
# Query values: httpx percent-encodes them; a lone surrogate cannot be, so it is left out here.
query_values = st.text(max_size=20) | st.sampled_from(
    ["\x00", "a\x00b", "x" * 5000, "2147483648", "9223372036854775808", "0001-01-01T00:00:00+14:00"]
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
    action=st.sampled_from(["", "/history", "/cancel", "/retry", "/verification"]),
    params=st.dictionaries(
        st.sampled_from(
            [
                "saga",
                "status",
                "limit",
                "cursor",
                "after_seq",
                "after",
                "created_after",
                "updated_before",
                "correlation_key",
            ]
        ),
        query_values,
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


@FUZZ
@given(
    segment=segments | st.integers(min_value=-(2**70), max_value=2**70).map(str),
    where=st.sampled_from(
        [
            ("GET", "/v1/dead-letters/{}"),
            ("DELETE", "/v1/dead-letters/{}"),
            ("POST", "/v1/dead-letters/{}/replay"),
            ("GET", "/v1/definitions/{}"),
        ]
    ),
    before_id=st.none() | query_values,
)
async def test_dead_letters_and_definitions_never_fail_with_500(
    client: AsyncTestClient[Any], segment: str, where: tuple[str, str], before_id: str | None
) -> None:
    method, template = where
    response = await client.request(method, template.format(segment))
    listed = await client.get(
        "/v1/dead-letters", params={} if before_id is None else {"before_id": before_id}
    )

    for answer in (response, listed):
        assert answer.status_code < 500, answer.text
        if answer.status_code >= 400:
            assert answer.headers["content-type"].startswith("application/problem+json")
