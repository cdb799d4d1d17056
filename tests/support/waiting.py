"""Waiting on observable state: poll a condition until it holds, fail with what was last seen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], bool] = bool,
    *,
    timeout: float = 30.0,
    what: str = "condition",
    alive: Callable[[], None] | None = None,
) -> T:
    """Call `probe` until `until(value)` holds; return that value. `alive()` raises when what
    we wait on has died (a process, a task): fail then, with its reason, not at the timeout."""
    deadline = time.monotonic() + timeout
    interval = 0.02
    while True:
        if alive is not None:
            alive()
        value = await probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; last value: {value!r}"
            )
        await asyncio.sleep(interval)
        interval = min(interval * 1.5, 0.25)


def tasks_alive(*tasks: asyncio.Task[Any]) -> Callable[[], None]:
    """An `alive` check for tasks that should run until the test stops them."""

    def check() -> None:
        for task in tasks:
            if task.done():
                error = None if task.cancelled() else task.exception()
                raise AssertionError(f"task {task.get_name()} ended: {error!r}") from error

    return check
