"""Group commit: calls that arrive while earlier ones are being committed go together in the
next transaction, so that many concurrent calls (the API's starts) share one commit, one fsync
and a few statements, while a call that finds the way free goes at once (no waiting to fill
a group: latency one at a time is unchanged).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import TYPE_CHECKING, Generic, TypeVar

from orchestrator.errors import WarrenError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Runs `commit(items)` for groups of at most `limit` items, at most `lanes` groups at
    once. `commit` returns one outcome per item, in order: its result, or the exception that
    item's caller gets (the others still commit). When a whole group fails otherwise than
    transiently, its items are committed again one by one, so that one bad item costs only
    itself."""

    def __init__(
        self,
        commit: Callable[[list[T]], Awaitable[list[R | Exception]]],
        *,
        lanes: int = 2,
        limit: int = 64,
    ) -> None:
        self.commit = commit
        self.lanes = lanes
        self.limit = limit
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._running = 0
        self._lanes: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future = self._enqueue(item)
        self._open_lanes(1)
        return await future

    async def submit_many(self, items: list[T]) -> list[R | Exception]:
        """`submit` for each item, queued at once (they fill groups in their order): each
        item's result, or the exception its `submit` would have raised."""
        futures = [self._enqueue(item) for item in items]
        self._open_lanes(-(-len(items) // self.limit))
        outcomes: list[R | Exception] = []
        for outcome in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome  # cancelled: not an item's outcome
            outcomes.append(outcome)
        return outcomes

    def _enqueue(self, item: T) -> asyncio.Future[R]:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        return future

    def _open_lanes(self, wanted: int) -> None:
        """Start up to `wanted` more lanes, `lanes` at most at once."""
        for _ in range(min(wanted, self.lanes - self._running)):
            self._running += 1
            # A context of its own: the group's work belongs to no caller's trace or logs.
            lane = asyncio.create_task(self._run_lane(), context=contextvars.Context())
            self._lanes.add(lane)
            lane.add_done_callback(self._lanes.discard)

    async def _run_lane(self) -> None:
        try:
            while self._waiting:
                group = self._waiting[: self.limit]
                del self._waiting[: self.limit]
                try:
                    outcomes = await self._commit_group([item for item, _ in group])
                except BaseException as exc:  # cancelled (shutting down): no caller hangs
                    for _, future in group:
                        if not future.done():
                            future.set_exception(WarrenError(f"not committed: {exc!r}"))
                    raise
                for (_, future), outcome in zip(group, outcomes, strict=True):
                    if future.done():  # its caller went away
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._running -= 1

    async def _commit_group(self, items: list[T]) -> list[R | Exception]:
        try:
            return await self.commit(items)
        except Exception as exc:  # noqa: BLE001 - handed to the callers
            transient = isinstance(exc, WarrenError) and exc.retryable
            if len(items) == 1 or transient:
                return [exc] * len(items)
            log.info("a group of %d failed (%r): committing them one by one", len(items), exc)
        alone: list[R | Exception] = []
        for item in items:
            try:
                alone += await self.commit([item])
            except Exception as exc:  # noqa: BLE001 - handed to its caller
                alone.append(exc)
        return alone
