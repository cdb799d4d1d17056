"""Handlers that cannot work or are not there: refused, checked, reported, failed at once.
Real processes on the real servers."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Stack
from tests.support.processes import run_warren, settings_env

pytestmark = pytest.mark.e2e


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
