"""Schemathesis against the real API: the OpenAPI document is true, and no input is a 500.

The API runs as a real process on the run's Postgres and RabbitMQ, with the example saga
registered, instances started and a dead letter recorded, so that generated requests reach real
rows. Every check is on: no server error, no undocumented status, bodies, headers and content
types as documented, negative data refused, 405s with their Allow header. Seeded and bounded in
time; the stateful phase follows the links Schemathesis infers between operations.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Stack

pytestmark = pytest.mark.integration

SEED = 11
BUDGET_SECONDS = 60  # Schemathesis' own time budget for fuzzing and stateful testing
TOOL_CRASH = b"SystemError: AST constructor recursion depth mismatch"
"""A crash of the interpreter under Schemathesis while it generates cases (seen once in a
CI run, then not in three reruns): the tool failed, not the API. Only that is run again."""
TOOL_CRASH_RETRIES = 1

# Requests whose every field matches the schema that the API still refuses, for reasons no JSON
# Schema can say: an input failing the saga's own input schema, a definition that is not valid
# (duplicate steps, an input_schema that is not a schema), a cursor this API did not hand out, a
# time outside years 1-9999 in UTC, an event whose data fails its type's schema or whose
# dataversion is newer than any upcaster knows. Each is a documented 4xx problem; any other refusal of valid
# data fails the run.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404", "409"]

[[operations]]
include-name = ["POST /v1/sagas/{{name}}", "POST /v1/definitions", "POST /v1/events"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "409", "422"]

[[operations]]
include-name = "GET /v1/instances"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "422"]

[[operations]]
include-name = "POST /v1/sagas/{{name}}"
parameters = {{ name = "order" }}

[parameters]
instance_id = "{instance_id}"
letter_id = {letter_id}
"""


async def _seed(stack: Stack, engine: AsyncEngine) -> tuple[str, int]:
    instance_id = await stack.start({"order_id": "A", "amount": 1})
    await stack.start({"order_id": "B", "amount": 2})
    async with engine.begin() as conn:
        letter_id = await conn.scalar(
            text(
                "INSERT INTO warren.dead_letters (message_id, kind, reason, origin_exchange, "
                "origin_routing_key, body) VALUES ('m-1', 'command', 'poison', 'warren.commands', "
                "'payments', 'not json') RETURNING id"
            )
        )
    assert isinstance(letter_id, int)
    return instance_id, letter_id


@pytest.mark.timeout(300)
async def test_the_api_conforms_to_its_openapi_document(
    stack: Stack, engine: AsyncEngine, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    await stack.api()
    instance_id, letter_id = await _seed(stack, engine)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(instance_id=instance_id, letter_id=letter_id))
    schemathesis = Path(sys.executable).with_name("schemathesis")

    command = [
        str(schemathesis),
        "--config-file",
        str(config),
        "run",
        f"{http.base_url}/schema/openapi.json",
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-time",
        str(BUDGET_SECONDS),
        "--workers",
        "2",
        "--request-timeout",
        "30",
    ]
    for _ in range(TOOL_CRASH_RETRIES + 1):
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path
        )
        output, _ = await proc.communicate()
        if proc.returncode == 0 or TOOL_CRASH not in output:
            break

    report = output.decode(errors="replace")
    assert proc.returncode == 0, report + "\n" + stack.processes.logs()
