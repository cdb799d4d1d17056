"""`warren check` and `warren register --app`: saga commands against a worker app's handlers."""

from __future__ import annotations

import json
import subprocess

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.config import Settings
from orchestrator.service.registry import register_saga
from tests.apps.sagas import forgotten, refund, refund_v2
from tests.support.processes import run_warren, settings_env

pytestmark = pytest.mark.integration

EXIT_MISSING_HANDLER = 6


def warren(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_warren(settings_env(settings), *args, timeout=60)


def test_check_given_sagas_names_missing_and_unused_handlers(settings: Settings) -> None:
    args = ("check", "--app", "tests.apps.fast:worker", "--sagas", "tests.apps.sagas:forgotten")
    table = warren(settings, *args)
    as_json = warren(settings, *args, "--json")

    assert table.returncode == EXIT_MISSING_HANDLER, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["SAGA", "STEP", "PHASE", "POOL", "COMMAND", "HANDLER"]
    assert [line.split() for line in lines[1:4]] == [
        ["forgotten", "v1", "take", "forward", "fast", "take", "yes"],
        ["forgotten", "v1", "take", "compensate", "fast", "put_back", "MISSING"],
        ["forgotten", "v1", "missing", "forward", "fast", "missing", "MISSING"],
    ]
    assert "that no given saga uses" in table.stdout
    assert "no handler in worker app 'fast' for 2 of 3 commands" in table.stdout
    assert "@worker.handler('put_back', pool='fast')" in table.stderr
    assert "Traceback" not in table.stderr

    assert as_json.returncode == EXIT_MISSING_HANDLER
    report = json.loads(as_json.stdout)
    assert report["app"] == "fast"
    assert [(c["command"], c["pool"], c["handled"]) for c in report["commands"]] == [
        ("take", "fast", True),
        ("put_back", "fast", False),
        ("missing", "fast", False),
    ]
    assert report["unused"] == [
        {"pool": "fast", "command": "give_back"},
        {"pool": "fast", "command": "release"},
    ]


async def test_check_reads_the_registered_sagas_by_default(
    settings: Settings, engine: AsyncEngine
) -> None:
    await register_saga(engine, refund)
    await register_saga(engine, refund_v2)  # only the latest version is checked

    listed = warren(settings, "check", "--json")
    complete = warren(
        settings,
        "check",
        "--app",
        "examples.orders.workers:worker",
        "--sagas",
        "examples.orders.saga:order_saga",
    )
    against_registered = warren(settings, "check", "--app", "examples.orders.workers:worker")

    assert listed.returncode == 0, listed.stderr
    commands = json.loads(listed.stdout)["commands"]
    assert {(c["saga"], c["version"]) for c in commands} == {("order", 1), ("refund", 2)}
    assert all(c["handled"] is None for c in commands)  # no app: a list of what to handle
    assert complete.returncode == 0, complete.stderr
    assert "every command has a handler in worker app 'orders'" in complete.stdout
    # The example app has `refund` on `payments`; refund v2 sends `refund_card` to `billing`.
    assert against_registered.returncode == EXIT_MISSING_HANDLER
    assert "command 'refund_card' (step 'refund_card') on pool 'billing'" in (
        against_registered.stderr
    )


def test_check_errors_are_one_line(settings: Settings) -> None:
    no_database = run_warren(
        {**settings_env(settings), "WARREN_DATABASE_URL": settings.database_url + "_absent"},
        "check",
    )
    sync_app = warren(settings, "check", "--app", "tests.apps.sync_handler:worker")
    not_an_app = warren(settings, "check", "--app", "tests.apps.sagas:forgotten")

    for result in (no_database, sync_app, not_an_app):
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert "WARREN_DATABASE_URL" in no_database.stderr
    assert "async def" in sync_app.stderr
    assert "is not a workers.Worker" in not_an_app.stderr


async def test_register_with_an_app_warns_about_missing_handlers(settings: Settings) -> None:
    result = warren(
        settings, "register", "tests.apps.sagas:forgotten", "--app", "tests.apps.fast:worker"
    )

    assert result.returncode == 0, result.stderr
    assert "forgotten v1: created" in result.stdout
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith("warning: saga forgotten v1: command 'put_back'")
    assert "has no handler in worker app 'fast'" in warnings[1]
    assert forgotten.name in result.stdout
