"""The inbox table: a message's id recorded in the transaction that handles it."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from orchestrator.storage.database import driver

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


def fresh_cte(consumer: int, ids: int) -> str:
    """The common table expression `fresh` of a statement that claims messages: the ids
    (parameter `ids`, uuid[]) that `consumer` (parameter `consumer`) sees for the first time.
    Sorted: two batches claiming the same ids lock them in the same order."""
    return f"""fresh AS (
    INSERT INTO warren.inbox (consumer, message_id)
    SELECT ${consumer}, id FROM unnest(${ids}::uuid[]) AS ids(id) ORDER BY id
    ON CONFLICT DO NOTHING RETURNING message_id)"""  # noqa: S608 - parameter numbers only


# On every message's path: sent on the driver connection (storage.database.driver).
_CLAIM_MANY = f"WITH {fresh_cte(1, 2)}\nSELECT message_id FROM fresh"


async def claim_many(conn: AsyncConnection, consumer: str, message_ids: list[UUID]) -> set[UUID]:
    """The ids `consumer` sees for the first time, claimed in one statement; the others are
    duplicates. A concurrent transaction claiming the same id blocks on the primary key until
    the first commits (then the id is not returned) or rolls back (then it is)."""
    if not message_ids:
        return set()
    rows = await (await driver(conn)).fetch(_CLAIM_MANY, consumer, sorted(set(message_ids)))
    return {UUID(bytes=row["message_id"].bytes) for row in rows}
