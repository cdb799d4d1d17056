"""The test suite's own waiting: a dead task ends the wait at once, with its reason."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.waiting import tasks_alive, wait_for


async def test_a_task_that_died_fails_the_wait_at_once_with_its_error() -> None:
    async def doomed() -> None:
        raise ConnectionResetError("reset while setting up")

    task = asyncio.create_task(doomed(), name="orchestrator")
    await asyncio.wait([task])

    async def never() -> bool:
        return False

    started = time.monotonic()
    with pytest.raises(AssertionError, match="orchestrator ended: ConnectionResetError"):
        await wait_for(never, timeout=60, alive=tasks_alive(task))
    assert time.monotonic() - started < 30  # not the 60 s bound


async def test_a_running_task_lets_the_wait_go_on() -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(stop.wait())
    calls = 0

    async def third_time() -> bool:
        nonlocal calls
        calls += 1
        return calls == 3

    assert await wait_for(third_time, timeout=60, alive=tasks_alive(task))
    stop.set()
    await task
