"""Middleware around your handlers: a tenant check, a rate limit, your own metrics.

    from workers import HandlerCall, HandlerOutcome, NextHandler, StepFailed, Worker

    worker = Worker("payments")

    @worker.middleware
    async def tenants_only(call: HandlerCall, next: NextHandler) -> HandlerOutcome:
        if call.ctx.input.get("tenant") is None:
            raise StepFailed("no tenant", type="TenantMissing")  # refused: the step fails
        return await next(call)  # the handler (and the middlewares inside this one)

A middleware is any async callable ``(call, next) -> outcome`` (a function, or an object with
an ``async def __call__``). Middlewares run in the order they are registered, the first one
outermost, around every call of every handler of the app, in the worker and in the test
harness alike. For a transactional handler they run inside its transaction: ``call.ctx.session``
is the handler's, and what a middleware writes commits or rolls back with the handler's writes.

``await next(call)`` returns the handler's outcome as data: its result, or the failure it
raised (a ``StepFailed``, or any other exception, which is retried). A middleware can refuse
by raising ``StepFailed`` (the step fails for good) or any other exception (the step's retry
policy applies), without calling ``next``; a middleware outside it sees that exception.
Context for the handler goes in a ``contextvars.ContextVar`` set around ``next``, or in a
changed call (``next(call.evolve(ctx=dataclasses.replace(call.ctx, ...)))``).

A replayed result (a later attempt of a step phase that already committed) and a command with
no handler never reach the middlewares: no handler runs for them.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, TypeAlias

import msgspec

from orchestrator.messaging.envelope import ReplyPayload
from orchestrator.messaging.failure import Failure
from orchestrator.observability.middleware import Next
from workers.app import Handler, StepContext, StepFailed

log = logging.getLogger("workers.runtime")  # the handler's failure lines keep their logger


# msgspec Structs, not frozen dataclasses: as immutable, and built several times faster (each
# command builds a few of these).


class HandlerCall(msgspec.Struct, frozen=True, kw_only=True):
    """One call of a handler, as the middlewares see it."""

    ctx: StepContext
    """What the handler gets: the command's saga, step, attempt, input, session…"""
    pool: str
    """The pool whose queue the command came from."""
    handler: Handler
    """The handler the chain ends with."""

    def evolve(self, **changes: Any) -> HandlerCall:
        """A copy with `changes`, e.g. ``call.evolve(ctx=...)``, to pass on to ``next``."""
        return msgspec.structs.replace(self, **changes)


class HandlerOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a handler call ended: a result, or a failure (which travels to the orchestrator as
    data). Build one with `succeeded` or `failed`."""

    result: Any = None
    """The handler's return value (JSON), when it succeeded."""
    failure: Failure | None = None
    """Its failure's type, message and whether a retry may help; None when it succeeded."""
    exception: BaseException | None = None
    """The exception the failure came from (for your logs and spans); it never travels."""

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def label(self) -> str:
        """``succeeded``, ``failed`` (retryable) or ``failed_for_good``: a bounded metric label."""
        if self.failure is None:
            return "succeeded"
        return "failed" if self.failure.retryable else "failed_for_good"

    @staticmethod
    def succeeded(result: Any) -> HandlerOutcome:
        return HandlerOutcome(result=result)

    @staticmethod
    def failed(exc: Exception, call: HandlerCall) -> HandlerOutcome:
        """The failure `exc` stands for: a `StepFailed` fails the step for good, any other
        exception is retryable (and logged with its traceback)."""
        if isinstance(exc, StepFailed):
            failure = Failure(type=exc.type, message=exc.message, retryable=False)
            return HandlerOutcome(failure=failure, exception=exc)
        log.error(
            "handler for %s failed (attempt %d)", call.ctx.command, call.ctx.attempt, exc_info=exc
        )
        return HandlerOutcome(failure=Failure.from_exception(exc, retryable=True), exception=exc)

    def reply(self) -> ReplyPayload:
        """The reply's payload: what the orchestrator learns."""
        if self.failure is None:
            return ReplyPayload(ok=True, result=self.result)
        return ReplyPayload(ok=False, failure=self.failure)


NextHandler: TypeAlias = Next[HandlerCall, HandlerOutcome]
"""What a middleware calls to go on: the middlewares inside it, then the handler."""


class Middleware(Protocol):
    """Runs around every handler call of a `Worker`; see the module docstring."""

    async def __call__(self, call: HandlerCall, next: NextHandler, /) -> HandlerOutcome: ...


async def call_handler(call: HandlerCall) -> HandlerOutcome:
    """The end of every chain: run the handler and turn its outcome into data."""
    try:
        result = await call.handler(call.ctx)
        msgspec.json.encode(result)  # the result must travel as JSON
    except Exception as exc:  # noqa: BLE001 - it travels as data; `failed` logs it
        return HandlerOutcome.failed(exc, call)
    return HandlerOutcome(result=result)
