"""Start-up patience: a starting process waits for a server that is down or still starting
(RabbitMQ, Postgres), trying again with backoff, and says so once, not on every try."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")

STARTUP_PATIENCE_SECONDS = 30.0
"""How long a starting process waits for RabbitMQ or the database before it gives up with the
last error."""


async def patiently(
    step: Callable[[], Awaitable[T]],
    *,
    worth_waiting: Callable[[BaseException], bool],
    on_first_failure: Callable[[BaseException], None],
    seconds: float = STARTUP_PATIENCE_SECONDS,
) -> T:
    """Run `step`, again while it fails with an error `worth_waiting` for, for up to `seconds`;
    `on_first_failure` tells of the wait (once). Any other error, or the last one, is raised."""

    def first_failure(state: RetryCallState) -> None:
        if state.attempt_number == 1 and state.outcome is not None:
            failure = state.outcome.exception()
            if failure is not None:
                on_first_failure(failure)

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(worth_waiting),
        wait=wait_exponential(multiplier=0.2, max=3.0),
        stop=stop_after_delay(seconds),
        before_sleep=first_failure,
        reraise=True,
    ):
        with attempt:
            return await step()
    raise AssertionError("unreachable: tenacity reraises the last error")
