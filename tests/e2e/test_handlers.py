"""Handlers that cannot work or are not there: refused, checked, reported, failed at once.
Real processes on the real servers."""

from __future__ import annotations

import asyncio
import json

import pytest

from orchestrator.service.registry import register_saga
from tests.apps.sagas import forgotten
from tests.conftest import Stack
from tests.support.processes import run_warren, settings_env

pytestmark = pytest.mark.e2e


def _warnings(log: str) -> list[str]:
    """The messages of the WARNING records of a process's JSON log."""
    found = []
    for line in log.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("level") == "WARNING":
                found.append(record["message"])
    return found


async def test_a_plain_def_handler_stops_the_worker_with_what_to_do(stack: Stack) -> None:
    env = settings_env(stack.probe.settings)

    result = await asyncio.to_thread(
        run_warren, env, "worker", "--app", "tests.apps.sync_handler:worker", timeout=60
    )

    assert result.returncode == 1
    assert "tests.apps.sync_handler.take" in result.stderr
    assert "async def" in result.stderr
    assert "asyncio.to_thread" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_forgotten_handler_fails_at_once_and_shows_everywhere(stack: Stack) -> None:
    await register_saga(stack.probe.engine, forgotten)
    await stack.api()
    await stack.orchestrators()
    worker = stack.processes.worker("tests.apps.fast:worker", "fast")
    await stack.probe.wait_consumers(stack.topology.pool_queue("fast"))

    instance_id = await stack.start({}, saga="forgotten")

    # Not retried (a step has 3 attempts, a compensation 15 minutes): failed in seconds.
    assert await stack.probe.wait_terminal(instance_id, timeout=60) == "failed"
    body = (await stack.http.get(f"/v1/instances/{instance_id}")).json()
    take, missing = body["steps"]
    assert body["failure"]["type"] == "UnknownCommand"
    assert missing["status"] == "failed"
    assert missing["attempts"] == 1
    assert missing["error"]["type"] == "UnknownCommand"
    assert "'missing' on pool 'fast'" in missing["error"]["message"]
    assert take["status"] == "compensation_failed"
    assert take["compensation"]["attempts"] == 1
    assert take["compensation"]["error"]["type"] == "UnknownCommand"
    assert "attempt_failed" not in [h["type"] for h in await stack.probe.history(instance_id)]

    # The table shows why, not only --json.
    env = {
        "WARREN_API_URL": f"http://{stack.probe.settings.api_host}:{stack.probe.settings.api_port}"
    }
    status = await asyncio.to_thread(run_warren, env, "status", instance_id)
    assert status.returncode == 0, status.stderr
    rows = {line.split()[0]: line for line in status.stdout.splitlines() if line}
    assert "UnknownCommand: no handler for 'missing'" in rows["missing"]
    assert "compensation UnknownCommand: no handler for 'put_back'" in rows["take"]

    # The worker said so, on each command it could not handle, naming what to do.
    warnings = _warnings(worker.log())
    on_command = [w for w in warnings if w.startswith("no handler for command")]
    assert len(on_command) == 2
    for command, phase in (("missing", "forward"), ("put_back", "compensate")):
        [line] = [w for w in on_command if f"command {command!r}" in w]
        assert "pool 'fast'" in line
        assert "saga forgotten v1" in line
        assert phase in line
        assert instance_id in line
        assert f"@worker.handler({command!r}, pool='fast')" in line

    # Deploy the missing compensation, retry: the instance finishes compensating.
    worker.kill()
    stack.processes.worker("tests.apps.fast:fixed", "fast")
    retried = await asyncio.to_thread(run_warren, env, "retry", instance_id)
    assert retried.returncode == 0, retried.stderr
    assert await stack.probe.wait_terminal(instance_id, timeout=60) == "compensated"
