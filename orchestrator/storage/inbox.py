"""The inbox: a message's id recorded in the transaction that handles it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.dialects.postgresql import insert

from orchestrator.storage.tables import inbox

if TYPE_CHECKING:
    from uuid import UUID

    from sqlalchemy.ext.asyncio import AsyncConnection


async def claim(conn: AsyncConnection, consumer: str, message_id: UUID) -> bool:
    """True the first time `consumer` sees `message_id`; False for a duplicate.

    A concurrent transaction claiming the same id blocks on the primary key until the first
    commits (then this one gets False) or rolls back (then this one gets True).
    """
    statement = (
        insert(inbox)
        .values(consumer=consumer, message_id=message_id)
        .on_conflict_do_nothing()
        .returning(inbox.c.message_id)
    )
    return (await conn.execute(statement)).first() is not None


async def claim_many(conn: AsyncConnection, consumer: str, message_ids: list[UUID]) -> set[UUID]:
    """`claim` for a batch in one statement: the ids seen for the first time."""
    if not message_ids:
        return set()
    statement = (
        insert(inbox)
        # Sorted: two batches claiming the same ids lock them in the same order.
        .values([{"consumer": consumer, "message_id": m} for m in sorted(set(message_ids))])
        .on_conflict_do_nothing()
        .returning(inbox.c.message_id)
    )
    return {row.message_id for row in await conn.execute(statement)}
