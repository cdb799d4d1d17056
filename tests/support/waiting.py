"""Waiting on observable state: poll a condition until it holds, fail with what was last seen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], bool] = bool,
    *,
    timeout: float = 30.0,
    what: str = "condition",
) -> T:
    """Call `probe` until `until(value)` holds; return that value."""
    deadline = time.monotonic() + timeout
    interval = 0.02
    while True:
        value = await probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; last value: {value!r}"
            )
        await asyncio.sleep(interval)
        interval = min(interval * 1.5, 0.25)
