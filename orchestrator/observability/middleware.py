"""Middleware chains: work done around each handled message, as an onion.

A middleware is an async callable ``(call, next) -> outcome``: it gets a typed input, may act
before calling ``next(call)`` (refuse, add context), and sees what ``next`` returns (or raises).
The first middleware of a list is the outermost:

    compose([a, b], run)(call)  ==  a(call, next=b(·, next=run))

Both sides use it: the worker around each command and each handler call
(`workers.middleware`), the orchestrator around each batch of replies and each timer
(`orchestrator.service.middleware`). Logs, metrics and tracing are the built-in middlewares.

A chain is composed once, when its process starts: a call goes through it without allocating
anything but the middlewares' own coroutines.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, Protocol, TypeAlias, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

Next: TypeAlias = Callable[[In], Awaitable[Out]]
"""The rest of a chain: the middlewares inside this one, then the handling itself."""


class Middleware(Protocol[In, Out]):
    """One layer of a chain; see the module docstring."""

    async def __call__(self, call: In, next: Next[In, Out], /) -> Out: ...


def compose(middlewares: Iterable[Middleware[In, Out]], handle: Next[In, Out]) -> Next[In, Out]:
    """`handle` wrapped in `middlewares`, the first one outermost."""
    chained = handle
    for middleware in reversed(list(middlewares)):
        chained = _Link(middleware, chained)
    return chained


class _Link(Generic[In, Out]):
    """A middleware bound to the rest of its chain. Not a coroutine itself: calling it
    returns the middleware's own, so a layer costs one coroutine per call."""

    __slots__ = ("middleware", "next")

    def __init__(self, middleware: Middleware[In, Out], next: Next[In, Out]) -> None:
        self.middleware = middleware
        self.next = next

    def __call__(self, call: In) -> Awaitable[Out]:
        return self.middleware(call, self.next)
