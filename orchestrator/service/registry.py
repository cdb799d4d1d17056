"""Registering definitions from Python and from the command line."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from orchestrator.definitions import Saga
from orchestrator.errors import WarrenError
from orchestrator.persistence import definitions
from orchestrator.storage.database import transaction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from orchestrator.persistence.definitions import RegisterOutcome


class ImportTargetError(WarrenError):
    """A MODULE:ATTR reference that cannot be imported or is of the wrong kind."""


async def register_saga(engine: AsyncEngine, saga: Saga) -> RegisterOutcome:
    """Store `saga` as (name, version): a no-op for the same content, `RegistrationConflict`
    for different content under a version that exists."""
    async with transaction(engine) as conn:
        return await definitions.register(conn, saga)


def import_object(reference: str) -> object:
    """Resolve ``package.module:attribute``."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ImportTargetError(
            f"{reference!r} is not MODULE:ATTR (e.g. examples.orders.saga:order_saga)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportTargetError(f"cannot import module {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attribute)
    except AttributeError as exc:
        raise ImportTargetError(f"module {module_name!r} has no attribute {attribute!r}") from exc


def import_sagas(reference: str) -> list[Saga]:
    """A Saga, or a list/tuple of them, named by MODULE:ATTR."""
    target = import_object(reference)
    sagas = list(target) if isinstance(target, list | tuple) else [target]
    if not sagas or not all(isinstance(s, Saga) for s in sagas):
        raise ImportTargetError(f"{reference} is not a Saga (or a list of Sagas)")
    return [s for s in sagas if isinstance(s, Saga)]
