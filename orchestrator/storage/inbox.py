"""The inbox: a message's id recorded in the transaction that handles it."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from sqlalchemy.dialects.postgresql import insert

from orchestrator.storage.database import driver
from orchestrator.storage.tables import inbox

if TYPE_CHECKING:
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


# Sorted: two batches claiming the same ids lock them in the same order.
_CLAIM_MANY = """
INSERT INTO warren.inbox (consumer, message_id)
SELECT $1, id FROM unnest($2::uuid[]) AS ids(id) ORDER BY id
ON CONFLICT DO NOTHING RETURNING message_id"""


async def claim_many(conn: AsyncConnection, consumer: str, message_ids: list[UUID]) -> set[UUID]:
    """`claim` for a batch in one statement: the ids seen for the first time."""
    if not message_ids:
        return set()
    rows = await (await driver(conn)).fetch(_CLAIM_MANY, consumer, sorted(set(message_ids)))
    return {UUID(bytes=row["message_id"].bytes) for row in rows}
