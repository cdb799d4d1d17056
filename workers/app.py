"""The handler API: a `Worker` app maps (pool, command) to an async handler."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from orchestrator.errors import WarrenError
from orchestrator.messaging.failure import FailureType

if TYPE_CHECKING:
    from uuid import UUID

    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from orchestrator.messaging.cloudevents import CloudEvent
    from orchestrator.messaging.envelope import Phase
    from orchestrator.messaging.topology import Topology
    from orchestrator.persistence.outbox import PendingRow
    from workers.middleware import Middleware


class StepFailed(WarrenError):
    """Raise from a handler for a business failure: the step fails at once (no retry) and the
    saga compensates. Any other exception is retried per the step's retry policy."""

    retryable = False

    def __init__(self, message: str, *, type: str | None = None) -> None:
        super().__init__(message)
        self.type: str = type or FailureType.STEP_FAILED
        """Reported as the failure's type (e.g. ``InsufficientFunds``)."""


class NoSession(WarrenError):
    """A handler asked for a database session but runs without a database."""


class HandlerError(WarrenError, TypeError):
    """A handler that can never run: refused when it is registered (a ``TypeError`` too)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class StepContext:
    """What a handler knows about the command it runs."""

    instance_id: UUID
    saga: str
    saga_version: int
    step: str
    command: str
    phase: Phase
    attempt: int
    """1 for the first attempt; a retry of the same step phase counts up."""
    input: Any
    """The saga's input."""
    results: dict[str, Any]
    """Results of the steps completed before this command, by step name."""
    idempotency_key: str
    """The same for every attempt and redelivery of this step phase: use it for external calls."""
    message_id: UUID
    correlation_id: UUID
    db: AsyncSession | None
    """The worker's transaction: your writes commit together with the inbox row and the reply.
    None for handlers registered with ``transactional=False``."""
    pool: str | None = None
    """The pool this handler serves."""
    topology: Topology | None = None
    """The worker's exchanges (those of its WARREN_NAMESPACE): where `publish_event` sends."""
    written: list[PendingRow] = field(default_factory=list, repr=False)
    """The events `publish_event` wrote: the runtime publishes them right after the commit."""

    @property
    def session(self) -> AsyncSession:
        if self.db is None:
            raise NoSession(
                f"handler for {self.command!r} has no database session: register it with "
                "transactional=True and give the worker a database"
            )
        return self.db

    async def publish_event(
        self,
        *,
        type: str,
        data: Any,
        source: str | None = None,
        subject: str | None = None,
        id: str | None = None,
        dataversion: int = 1,
    ) -> CloudEvent:
        """Publish a domain event if and only if this step's effect commits: written to the
        outbox in the handler's transaction (``ctx.session``), published after the commit.
        `source` defaults to ``warren/worker/<pool>``; see `workers.publish_event`."""
        from workers.events import write_event  # loads the database code on first use

        event, row = await write_event(
            self.session,
            type=type,
            data=data,
            source=source or f"warren/worker/{self.pool or 'unknown'}",
            subject=subject,
            id=id,
            dataversion=dataversion,
            topology=self.topology,
        )
        self.written.append(row)
        return event


Handler: TypeAlias = Callable[[StepContext], Awaitable[Any]]
StartupHook: TypeAlias = Callable[["AsyncEngine"], Awaitable[None]]
M = TypeVar("M", bound="Middleware")


@dataclass(frozen=True, kw_only=True, slots=True)
class HandlerSpec:
    command: str
    pool: str
    fn: Handler
    transactional: bool


class Worker:
    """A set of step handlers, grouped by the pool whose queue they serve.

    ``warren worker --app module:worker --pool payments`` runs the handlers of one pool;
    without ``--pool`` it serves every pool it has handlers for. `middleware` runs around
    every handler call, the first one outermost (see `workers.middleware`).
    """

    def __init__(self, name: str = "worker", *, middleware: Iterable[Middleware] = ()) -> None:
        self.name = name
        self._handlers: dict[str, dict[str, HandlerSpec]] = {}
        self._startup: list[StartupHook] = []
        self._middleware: list[Middleware] = []
        for each in middleware:
            self.middleware(each)

    def handler(
        self, command: str, *, pool: str, transactional: bool = True
    ) -> Callable[[Handler], Handler]:
        """Register an async handler for `command` on `pool`.

        transactional=True (the default): the handler gets ``ctx.session`` and its writes commit
        with the inbox row and the reply: exactly once. False: no database; the handler may run
        more than once for one step (at least once) and should use ``ctx.idempotency_key``.
        """

        def register(fn: Handler) -> Handler:
            if not _is_async(fn):
                # Awaiting a plain function's result fails on every attempt, only when a saga
                # reaches the step: say so now, while the module is imported.
                raise HandlerError(
                    f"the handler for {command!r} on pool {pool!r} ({_describe(fn)}) is not "
                    "async: define it with `async def`; for blocking code, keep it a plain "
                    "function and call it inside an async handler with "
                    "`await asyncio.to_thread(fn, ...)`"
                )
            commands = self._handlers.setdefault(pool, {})
            if command in commands:
                raise ValueError(f"pool {pool!r} already has a handler for {command!r}")
            commands[command] = HandlerSpec(
                command=command, pool=pool, fn=fn, transactional=transactional
            )
            return fn

        return register

    def on_startup(self, hook: StartupHook) -> StartupHook:
        """Run `hook(engine)` once when a worker process starts (e.g. to create tables)."""
        self._startup.append(hook)
        return hook

    def middleware(self, middleware: M) -> M:
        """Add `middleware` inside those added before it, around every handler call (usable
        as a decorator). Add them before the worker starts."""
        if not _is_async(middleware):
            raise HandlerError(
                f"middleware {_describe(middleware)} is not async: define it with `async def` "
                "(a function `(call, next)`, or a class whose `__call__` is one)"
            )
        self._middleware.append(middleware)
        return middleware

    @property
    def middlewares(self) -> list[Middleware]:
        """The app's middlewares, outermost first."""
        return list(self._middleware)

    @property
    def pools(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def startup_hooks(self) -> list[StartupHook]:
        return list(self._startup)

    @property
    def handlers(self) -> list[HandlerSpec]:
        """Every handler, by pool then command."""
        return [self._handlers[p][c] for p in self.pools for c in sorted(self._handlers[p])]

    def lookup(self, pool: str, command: str) -> HandlerSpec | None:
        return self._handlers.get(pool, {}).get(command)

    def all_transactional(self, pool: str) -> bool:
        return all(spec.transactional for spec in self._handlers.get(pool, {}).values())

    def needs_database(self, pools: list[str]) -> bool:
        return any(spec.transactional for p in pools for spec in self._handlers.get(p, {}).values())


def _is_async(fn: object) -> bool:
    """An ``async def`` function or method, a partial of one, or an object whose
    ``__call__`` is one."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    return callable(fn) and inspect.iscoroutinefunction(type(fn).__call__)


def _describe(fn: object) -> str:
    name = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if name and module else repr(fn)
