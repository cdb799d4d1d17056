"""The outbox table: messages written with their cause, deleted once the broker confirmed them.

The relay that publishes them is `orchestrator.messaging.relay`; this module is its SQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec
from sqlalchemy import and_, delete, func, select, text

from orchestrator.storage.database import driver
from orchestrator.storage.tables import outbox

if TYPE_CHECKING:
    from collections.abc import Collection

    from sqlalchemy.ext.asyncio import AsyncConnection


def queue_ctes(first: int) -> str:
    """The common table expressions `forgotten` and `queued` of a statement that writes
    outbox rows: the insert takes the arrays of `outbox_columns` as parameters `first` to
    `first + 4` and returns (id, message_id); the rows this process published since its last
    transaction (parameter `first + 5`, from `Relay.forgetting`) are deleted in the same
    statement, so they need no commit of their own."""
    m, e, r, b, h, f = range(first, first + 6)
    return f"""forgotten AS (DELETE FROM warren.outbox WHERE id = ANY(${f}::bigint[])),
queued AS (
    INSERT INTO warren.outbox (message_id, exchange, routing_key, body, headers)
    SELECT m, e, r, b, h::jsonb
    FROM unnest(${m}::uuid[], ${e}::text[], ${r}::text[], ${b}::bytea[], ${h}::text[])
        AS x(m, e, r, b, h)
    RETURNING id, message_id)"""  # noqa: S608 - parameter numbers only


# On every message's path: sent on the driver connection (storage.database.driver).
_ENQUEUE = f"WITH {queue_ctes(1)}\nSELECT id, message_id FROM queued"

_DELETE = "DELETE FROM warren.outbox WHERE id = ANY($1::bigint[])"

_headers = msgspec.json.Encoder()


class OutboxMessage(msgspec.Struct, frozen=True, kw_only=True):
    message_id: UUID
    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any] = {}


class PendingRow(msgspec.Struct, frozen=True):
    id: int
    message: OutboxMessage


async def enqueue(conn: AsyncConnection, messages: list[OutboxMessage]) -> list[PendingRow]:
    """Write `messages` in the caller's transaction (one statement); publish the result after
    commit."""
    if not messages:
        return []
    rows = await (await driver(conn)).fetch(_ENQUEUE, *outbox_columns(messages), [])
    return pending_rows(messages, [row["id"] for row in rows], [row["message_id"] for row in rows])


def outbox_columns(messages: list[OutboxMessage]) -> tuple[list[Any], ...]:
    """The arrays an outbox insert takes: message ids, exchanges, routing keys, bodies,
    headers (JSON)."""
    return (
        [m.message_id for m in messages],
        [m.exchange for m in messages],
        [m.routing_key for m in messages],
        [m.body for m in messages],
        [_headers.encode(m.headers).decode() for m in messages],
    )


def pending_rows(
    messages: list[OutboxMessage], ids: list[int], message_ids: list[Any]
) -> list[PendingRow]:
    """The inserted rows (as the insert returned their ids and message ids, asyncpg's UUIDs) in
    the order of `messages`."""
    by_message = {UUID(bytes=m.bytes): i for i, m in zip(ids, message_ids, strict=True)}
    return [PendingRow(by_message[m.message_id], m) for m in messages]


async def delete_published(conn: AsyncConnection, ids: list[int]) -> None:
    """Forget rows the broker confirmed (one statement for any number)."""
    await (await driver(conn)).execute(_DELETE, ids)


async def claim_left_behind(
    conn: AsyncConnection,
    *,
    grace_seconds: float,
    limit: int,
    held: Collection[str] = (),
    commands_exchange: str | None = None,
) -> list[PendingRow]:
    """Lock (`SKIP LOCKED`) up to `limit` rows older than the grace period, oldest first. The
    commands to the `held` pools are skipped in SQL: they must not crowd out the rest."""
    older = outbox.c.created_at < text("now() - make_interval(secs => :grace)")
    query = select(outbox).where(older)
    if held:
        query = query.where(
            ~and_(outbox.c.exchange == commands_exchange, outbox.c.routing_key.in_(held))
        )
    claimed = await conn.execute(
        query.order_by(outbox.c.id).limit(limit).with_for_update(skip_locked=True),
        {"grace": grace_seconds},
    )
    return [
        PendingRow(
            r.id,
            OutboxMessage(
                message_id=r.message_id,
                exchange=r.exchange,
                routing_key=r.routing_key,
                body=r.body,
                headers=r.headers,
            ),
        )
        for r in claimed
    ]


async def delete_claimed(conn: AsyncConnection, ids: list[int]) -> None:
    """Delete rows claimed by `claim_left_behind` and published."""
    await conn.execute(delete(outbox).where(outbox.c.id.in_(ids)))


async def backlog(conn: AsyncConnection) -> tuple[int, float]:
    """Rows waiting, and the age of the oldest in seconds (0 when none)."""
    row = (
        await conn.execute(
            select(
                func.count(),
                func.coalesce(func.extract("epoch", func.now() - func.min(outbox.c.created_at)), 0),
            )
        )
    ).one()
    return row[0], float(row[1])
