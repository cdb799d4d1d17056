"""A user's middlewares on a real worker: one refuses a command, one counts handler calls."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Stack
from tests.e2e.test_observability import _samples, _value
from tests.support.processes import free_port

pytestmark = pytest.mark.e2e


async def test_a_middleware_refuses_a_command_and_another_counts_the_calls(stack: Stack) -> None:
    port = free_port()
    await stack.api()
    await stack.orchestrators()
    stack.processes.env["WARREN_METRICS_PORT"] = str(port)
    await stack.workers(app="tests.apps.guarded:worker")

    refused = await stack.start({"order_id": "BLOCKED-1", "amount": 5})
    served = await stack.start({"order_id": "ACME-1", "amount": 5})

    assert await stack.probe.wait_terminal(served) == "completed"
    assert await stack.probe.wait_terminal(refused) in {"compensated", "failed"}
    body = (await stack.http.get(f"/v1/instances/{refused}")).json()
    assert body["failure"]["type"] == "TenantRefused"
    assert "'BLOCKED' may not order" in body["failure"]["message"]
    first = body["steps"][0]
    assert (first["name"], first["status"], first["attempts"]) == ("reserve_credit", "failed", 1)
    assert await stack.probe.ledger(refused) == []  # the handler never ran
    assert len(await stack.probe.ledger(served)) == 4

    async with httpx.AsyncClient(timeout=5) as client:
        samples = _samples((await client.get(f"http://127.0.0.1:{port}/metrics")).text)
    counted = {
        command: _value(samples, "guarded_handler_calls_total", command=command)
        for command in ("reserve_credit", "reserve_stock", "charge", "ship")
    }
    assert counted == dict.fromkeys(counted, 1)  # the served order's, not the refused one's
    assert _value(samples, "guarded_handler_calls_total", outcome="succeeded") == 4
