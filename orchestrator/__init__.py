"""Warren: saga orchestration on RabbitMQ and Postgres, every effect exactly once.

Define sagas with the DSL below, register them, start and follow them with `WarrenClient`; run
the processes with the ``warren`` command. Handlers are written with the ``workers`` package.

Importing this package loads the DSL only: the client loads on first use of one of its names,
the engine and the servers on demand (tests/unit/test_layers.py checks it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.definitions import (
    Case,
    ChildSaga,
    Choice,
    Compensation,
    Emit,
    Map,
    Parallel,
    RetryPolicy,
    Saga,
    Step,
    Trigger,
    WaitFor,
    field,
)
from orchestrator.errors import (
    DefinitionError,
    EventInvalid,
    InputInvalid,
    NotFound,
    RegistrationConflict,
    UnknownVersion,
    WarrenError,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from orchestrator.client import (
        ApiError,
        ApiUnreachable,
        BatchStart,
        StartResult,
        WaitTimeout,
        WarrenClient,
    )
    from orchestrator.messaging.versions import upcaster
    from orchestrator.persistence.definitions import RegisterOutcome

# Grouped by what a user does with the names, so not alphabetical as a whole.
__all__ = [  # noqa: RUF022
    # defining sagas
    "Case",
    "ChildSaga",
    "Choice",
    "Compensation",
    "Map",
    "Parallel",
    "RetryPolicy",
    "Saga",
    "Step",
    "WaitFor",
    "field",
    # events in and out
    "Emit",
    "Trigger",
    # registering them
    "register",
    # reading old payloads (events, commands) in their current shape
    "upcaster",
    # starting, reading and operating them over the HTTP API
    "BatchStart",
    "StartResult",
    "WarrenClient",
    # errors
    "ApiError",
    "ApiUnreachable",
    "DefinitionError",
    "EventInvalid",
    "InputInvalid",
    "NotFound",
    "RegistrationConflict",
    "UnknownVersion",
    "WaitTimeout",
    "WarrenError",
]

_CLIENT_NAMES = frozenset(
    {"ApiError", "ApiUnreachable", "BatchStart", "StartResult", "WaitTimeout", "WarrenClient"}
)


if not TYPE_CHECKING:  # type checkers see the imports above, and no catch-all for typos

    def __getattr__(name: str) -> Any:
        # The client (and httpx behind it) loads when first asked for, not with the DSL.
        if name in _CLIENT_NAMES:
            from orchestrator import client

            return getattr(client, name)
        if name == "upcaster":  # the engine imports this package: the wire code loads on use
            from orchestrator.messaging.versions import upcaster

            return upcaster
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def register(engine: AsyncEngine, saga: Saga) -> RegisterOutcome:
    """Store `saga` in Warren's database (`engine` on it), as ``warren register`` does: a
    no-op for the same content (``"unchanged"``), `RegistrationConflict` for different content
    under a version that exists, ``"created"`` otherwise."""
    # SQLAlchemy loads here, on the first registration, not with the DSL.
    from orchestrator.service.registry import register_saga

    return await register_saga(engine, saga)
