"""Verify instances: replay each one's history through the engine and compare the result with
its stored snapshot (`engine.replay`). The history is the record; the snapshot an optimisation
that must agree with it.

Read-only: one statement for a page of instances, one for their histories; the replay itself
is pure. `verify_all` pages over every instance in id order, so it goes through thousands
without holding them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.api.schema import Verification
from orchestrator.engine.replay import Outcome, Verdict, replay_history
from orchestrator.errors import InstanceNotFound, SagaNotFound
from orchestrator.persistence import instances
from orchestrator.storage.database import transaction

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from uuid import UUID

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from orchestrator.persistence.definitions import DefinitionCache

PAGE = 100

WHAT_TO_DO = (
    "the stored snapshot no longer follows from the history: keep both for investigation "
    "(warren history ID --json, warren status ID --json), and do not operate the instance "
    "until its cause is understood"
)


async def verify_instance(
    conn: AsyncConnection, definitions: DefinitionCache, instance_id: UUID
) -> Verification:
    """Replay one instance; `InstanceNotFound` when there is none."""
    found = await instances.stored_instances(conn, ids=[instance_id], limit=1)
    if not found:
        raise InstanceNotFound(f"no saga instance {instance_id}")
    return await _verify(conn, definitions, found[0])


async def verify_page(
    conn: AsyncConnection,
    definitions: DefinitionCache,
    *,
    after: UUID | None = None,
    limit: int = PAGE,
) -> tuple[list[Verification], UUID | None]:
    """Replay up to `limit` instances after the id `after`, in id order; the id to pass as
    `after` for the next page (None after the last)."""
    found = await instances.stored_instances(conn, after=after, limit=limit)
    checked = [await _verify(conn, definitions, stored) for stored in found]
    return checked, found[-1].id if len(found) == limit else None


async def verify_all(
    engine: AsyncEngine, definitions: DefinitionCache, *, page: int = PAGE
) -> AsyncIterator[Verification]:
    """Every instance, a page per short transaction."""
    after: UUID | None = None
    while True:
        async with transaction(engine) as conn:
            checked, after = await verify_page(conn, definitions, after=after, limit=page)
        for verification in checked:
            yield verification
        if after is None:
            return


async def _verify(
    conn: AsyncConnection, definitions: DefinitionCache, stored: instances.StoredInstance
) -> Verification:
    try:
        definition = await definitions.get(conn, stored.saga, stored.version)
    except SagaNotFound:
        verdict = Verdict(
            outcome=Outcome.UNVERIFIABLE,
            message=f"its definition {stored.saga} v{stored.version} is not stored: cannot verify",
        )
    else:
        verdict = replay_history(definition, stored.id, stored.history, stored.snapshot)
    message = verdict.message
    if verdict.outcome is Outcome.MISMATCH:
        message = f"{message}; {WHAT_TO_DO}"
    return Verification(
        instance_id=stored.id,
        outcome=verdict.outcome.value,
        message=message,
        transitions=verdict.transitions,
        seq=verdict.seq,
        field=verdict.field,
        recorded=verdict.recorded,
        replayed=verdict.replayed,
    )
