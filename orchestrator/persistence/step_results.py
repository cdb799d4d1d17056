"""The step_results table: a step phase's effect, once. The worker claims the idempotency keys
of a batch of commands together with their inbox rows; each handler runs in a savepoint of
its own (begun only if it uses the session), and its result is recorded with the replies. A
later attempt of the same phase finds the key and replays the stored result instead of running
again; a concurrent one waits on the key until the first commits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec

from orchestrator.persistence.inbox import fresh_cte
from orchestrator.persistence.outbox import outbox_columns, pending_rows, queue_ctes
from orchestrator.storage.database import driver

if TYPE_CHECKING:
    from collections.abc import Collection

    from sqlalchemy.ext.asyncio import AsyncConnection

    from orchestrator.persistence.outbox import OutboxMessage, PendingRow

# On every batch's path: sent on the driver connection (storage.database.driver). Sorted: two
# batches claiming the same ids or keys lock them in the same order.
_CLAIM = f"""
WITH {fresh_cte(1, 2)},
claimed AS (
    INSERT INTO warren.step_results (consumer, idempotency_key)
    SELECT $1, x.key FROM unnest($2::uuid[], $3::text[]) AS x(message_id, key)
    JOIN fresh USING (message_id) ORDER BY x.key
    ON CONFLICT DO NOTHING RETURNING idempotency_key)
SELECT message_id, NULL AS key FROM fresh
UNION ALL
SELECT NULL, idempotency_key FROM claimed"""  # noqa: S608 - parameter numbers only

_STORED = """
SELECT idempotency_key, result::text FROM warren.step_results
WHERE consumer = $1 AND idempotency_key = ANY($2::text[])"""

_SETTLE = f"""
WITH recorded AS (
    UPDATE warren.step_results AS s SET result = r.result::jsonb
    FROM unnest($2::text[], $3::text[]) AS r(key, result)
    WHERE s.consumer = $1 AND s.idempotency_key = r.key),
released AS (
    DELETE FROM warren.step_results WHERE consumer = $1 AND idempotency_key = ANY($4::text[])),
{queue_ctes(5)}
SELECT id, message_id FROM queued"""  # noqa: S608 - parameter numbers only

_json = msgspec.json.Encoder()


class Effects(msgspec.Struct, kw_only=True):
    """A batch's step phases: which this transaction may apply, what earlier attempts
    stored, and what to settle at the end (`settle`)."""

    fresh: set[UUID]
    """The commands seen for the first time (the others are copies)."""
    claimed: set[str]
    """The idempotency keys of those whose effect this transaction may apply."""
    stored: dict[str, Any] = {}
    """The results of the others, stored by the attempts that applied them."""
    results: dict[str, Any] = {}
    """To record: the results of the effects applied here."""
    released: list[str] = []
    """To give back: the keys of the handlers that failed (a later attempt runs again)."""


async def claim(conn: AsyncConnection, consumer: str, commands: dict[UUID, str]) -> Effects:
    """Claim commands (message id → idempotency key, the keys all different) in the inbox and
    their keys in step_results, in one statement; then read the results stored under the keys
    that were claimed already (one more, only when there are any). A key claimed by a
    concurrent transaction is waited for: when that one commits, its result is read here."""
    ids = sorted(commands)
    raw = await driver(conn)
    rows = await raw.fetch(_CLAIM, consumer, ids, [commands[i] for i in ids])
    fresh = {UUID(bytes=r["message_id"].bytes) for r in rows if r["message_id"] is not None}
    claimed = {r["key"] for r in rows if r["key"] is not None}
    replayed = [commands[i] for i in fresh if commands[i] not in claimed]
    stored: dict[str, Any] = {}
    if replayed:
        # A statement of its own: it sees what a transaction it waited for committed.
        stored = {
            r["idempotency_key"]: None if r["result"] is None else msgspec.json.decode(r["result"])
            for r in await raw.fetch(_STORED, consumer, replayed)
        }
    return Effects(fresh=fresh, claimed=claimed, stored=stored)


async def settle(
    conn: AsyncConnection,
    consumer: str,
    effects: Effects,
    replies: list[OutboxMessage],
    *,
    forget: Collection[int] = (),
) -> list[PendingRow]:
    """In one statement: record the results of the effects applied, give back the keys of
    the handlers that failed, write the replies to the outbox, and delete the rows this
    process published since its last transaction."""
    rows = await (await driver(conn)).fetch(
        _SETTLE,
        consumer,
        list(effects.results),
        [_json.encode(result).decode() for result in effects.results.values()],
        effects.released,
        *outbox_columns(replies),
        list(forget),
    )
    return pending_rows(replies, [r["id"] for r in rows], [r["message_id"] for r in rows])
