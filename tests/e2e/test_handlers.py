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
from tests.support.waiting import wait_for

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

    # The worker said so: at start (the registered saga needs handlers it lacks) and on each
    # command it could not handle, naming what to do.
    async def checked_at_start() -> list[str]:  # in the background: it may come late
        return [w for w in _warnings(worker.log()) if "has no handler in worker app 'fast'" in w]

    at_start = await wait_for(checked_at_start, lambda w: len(w) == 2, what="the start check")
    assert any("command 'put_back' (compensation of step 'take')" in w for w in at_start)
    on_command = [w for w in _warnings(worker.log()) if w.startswith("no handler for command")]
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


async def test_dev_checks_its_sagas_against_its_app(stack: Stack) -> None:
    dev = stack.processes.start(
        "dev", "dev", "--app", "tests.apps.fast:worker", "--sagas", "tests.apps.sagas:forgotten"
    )

    async def checked() -> list[str]:
        assert dev.running, dev.log()
        return [w for w in _warnings(dev.log()) if "has no handler in worker app 'fast'" in w]

    warnings = await wait_for(checked, lambda w: len(w) == 2, what="the handler check", timeout=60)
    assert "command 'put_back' (compensation of step 'take') on pool 'fast'" in warnings[0]
    assert "command 'missing' (step 'missing') on pool 'fast'" in warnings[1]
