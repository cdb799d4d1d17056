"""The step_results table: a step phase's effect, once. The worker claims the idempotency key in
the savepoint that holds the handler's writes and records the result with them; a later attempt
of the same phase finds the key and replays the stored result instead of running again."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from orchestrator.storage.database import driver

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

# On every command's path: sent on the driver connection (storage.database.driver).
_CLAIM = """
INSERT INTO warren.step_results (consumer, idempotency_key) VALUES ($1, $2)
ON CONFLICT DO NOTHING RETURNING idempotency_key"""
_STORED = """
SELECT result::text FROM warren.step_results WHERE consumer = $1 AND idempotency_key = $2"""
_RECORD = """
UPDATE warren.step_results SET result = $3::jsonb WHERE consumer = $1 AND idempotency_key = $2"""


class StoredResult(msgspec.Struct, frozen=True):
    result: Any


async def claim(conn: AsyncConnection, consumer: str, key: str) -> StoredResult | None:
    """Claim the right to apply this step phase's effect; None when claimed, else the stored
    result of the attempt that already applied it. A concurrent attempt waits on the key."""
    raw = await driver(conn)
    if await raw.fetchval(_CLAIM, consumer, key) is not None:
        return None
    stored = await raw.fetchval(_STORED, consumer, key)
    return StoredResult(msgspec.json.decode(stored) if stored is not None else None)


async def record(conn: AsyncConnection, consumer: str, key: str, result: Any) -> None:
    """Store the result of the attempt that applied the effect (claimed by `claim`)."""
    await (await driver(conn)).execute(_RECORD, consumer, key, msgspec.json.encode(result).decode())
