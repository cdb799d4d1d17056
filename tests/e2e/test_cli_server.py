"""The server-side `warren` commands as a new user meets them: run from a folder of their own,
against a database or a vhost that is not there, two workers on one host. Real processes."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from orchestrator.storage.migrate import MIGRATIONS_DIR
from tests.support import services
from tests.support.probes import Probe
from tests.support.processes import Proc, Processes, run_warren
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

TRIP_SAGA = """
from orchestrator import Saga, Step

trip_saga = Saga(name="trip", version=1, steps=[Step(name="book_flight", pool="flights")])
"""


async def warren(
    env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_warren, env, *args, cwd=cwd, timeout=timeout)


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


async def test_register_imports_a_module_from_the_current_folder(
    database: str, tmp_path: Path
) -> None:
    (tmp_path / "trip_saga.py").write_text(TRIP_SAGA)

    result = await warren(
        {"WARREN_DATABASE_URL": database}, "register", "trip_saga:trip_saga", cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("trip v1: created")


async def test_migrate_prints_one_line_per_migration_then_already_at_head(run_id: str) -> None:
    name = f"{run_id}_migrate_output"
    await services.create_database(name)
    env = {"WARREN_DATABASE_URL": services.database_url(name)}
    revisions = list((MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))

    first = await warren(env, "migrate")
    again = await warren(env, "migrate")

    assert first.returncode == 0, first.stderr
    assert first.stderr == ""  # no log records, JSON or not
    applied = first.stdout.splitlines()
    assert len(applied) == len(revisions), first.stdout
    assert all(line.startswith("applied ") for line in applied), first.stdout
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    assert again.stdout.startswith("already at the latest schema"), again.stdout


async def test_migrate_names_the_setting_when_the_database_does_not_exist(run_id: str) -> None:
    missing = services.database_url(f"{run_id}_never_created")

    result = await warren({"WARREN_DATABASE_URL": missing}, "migrate")

    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert "does not exist" in line
    assert "WARREN_DATABASE_URL" in line


async def test_an_orchestrator_names_the_setting_when_the_database_does_not_exist(
    run_id: str, amqp_url: str
) -> None:
    missing = services.database_url(f"{run_id}_never_created")
    env = {"WARREN_DATABASE_URL": missing, "WARREN_AMQP_URL": amqp_url, "WARREN_METRICS_PORT": "0"}

    result = await warren(env, "orchestrator", timeout=120)

    assert result.returncode == 1, result.stderr
    line = _one_line(result.stderr)  # not a traceback, and not after waiting for it to exist
    assert "does not exist" in line
    assert "WARREN_DATABASE_URL" in line


@pytest.mark.parametrize("command", ["orchestrator", "worker", "api"])
@pytest.mark.parametrize("fault", ["vhost", "password"])
async def test_a_process_refused_by_rabbitmq_says_why_in_one_line_and_exits(
    database: str, amqp_url: str, command: str, fault: str
) -> None:
    base, vhost = amqp_url.rsplit("/", 1)
    if fault == "vhost":  # RabbitMQ refuses a vhost that does not exist: no admin change needed
        url = f"{base}/{vhost}_no_such_vhost"
    else:
        url = amqp_url.replace("guest:guest@", "guest:not-the-password@")
    args = {
        "orchestrator": ["orchestrator"],
        "worker": ["worker", "--app", "examples.orders.workers:worker"],
        "api": ["api", "--port", "0"],
    }[command]
    env = {"WARREN_DATABASE_URL": database, "WARREN_AMQP_URL": url, "WARREN_METRICS_PORT": "0"}

    result = await warren(env, *args, timeout=120)

    assert result.returncode == 1, result.stderr
    line = _one_line(result.stderr)
    assert "WARREN_AMQP_URL" in line
    assert ("vhost" in line) if fault == "vhost" else ("password" in line)
    assert "not-the-password" not in line


async def test_two_workers_on_one_host_each_serve_metrics_on_a_port_they_log(
    processes: Processes, probe: Probe
) -> None:
    unset: dict[str, str | None] = {"WARREN_METRICS_PORT": None}  # as a user runs them
    first = processes.worker("examples.orders.workers:worker", "payments", env=unset)
    second = processes.worker("examples.orders.workers:worker", "payments", env=unset)

    await probe.wait_consumers(probe.settings.topology.pool_queue("payments"), 2, timeout=60)
    ports = [await _metrics_port(proc) for proc in (first, second)]

    assert first.running, first.log()
    assert second.running, second.log()
    assert ports[0] != ports[1]
    async with httpx.AsyncClient(timeout=10) as client:
        for port in ports:
            response = await client.get(f"http://127.0.0.1:{port}/metrics")
            assert response.status_code == 200
            assert "warren_consumers" in response.text

    # A port set on purpose is not replaced: taken, the process stops and says which setting.
    taken = processes.worker(
        "examples.orders.workers:worker", "payments", env={"WARREN_METRICS_PORT": str(ports[0])}
    )
    assert await asyncio.to_thread(taken.wait, 60) == 1
    assert "WARREN_METRICS_PORT" in taken.log()
    assert "Traceback" not in taken.log()


async def _metrics_port(proc: Proc) -> int:
    async def logged() -> re.Match[str] | None:
        assert proc.running, proc.log()
        return re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", proc.log())

    found = await wait_for(logged, timeout=60, what=f"{proc.name} to log its metrics port")
    assert found is not None
    return int(found.group(1))
