"""The dead_letters table: messages parked in the dead-letter queue, recorded (`record`),
listed, read, replayed (through the outbox) and deleted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

# The rows are part of the API's schema (the client reads them too); re-exported here.
from orchestrator.api.schema import DeadLetterDetail as DeadLetterDetail
from orchestrator.api.schema import DeadLetterRow as DeadLetterRow
from orchestrator.errors import InvalidState, NotFound
from orchestrator.messaging.envelope import new_message_id, utcnow
from orchestrator.persistence.outbox import OutboxMessage, PendingRow, enqueue
from orchestrator.storage.tables import dead_letters

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


class DeadLetterNotFound(NotFound):
    """No recorded dead letter with that id."""


_SUMMARY = [
    dead_letters.c.id,
    dead_letters.c.message_id,
    dead_letters.c.kind,
    dead_letters.c.instance_id,
    dead_letters.c.reason,
    dead_letters.c.origin_exchange,
    dead_letters.c.origin_routing_key,
    dead_letters.c.origin_queue,
    dead_letters.c.received_at,
    dead_letters.c.replayed_at,
]


class Parked(msgspec.Struct, frozen=True, kw_only=True):
    """A message as it arrived from the dead-letter queue, with its reason and origin."""

    message_id: str | None
    kind: str | None
    """command, reply, or None when it did not decode."""
    instance_id: UUID | None
    reason: str
    origin_exchange: str | None
    origin_routing_key: str | None
    origin_queue: str | None
    body: bytes
    headers: dict[str, Any]
    replay_of: int | None = None
    """The dead letter this message is a replay of (its `x-warren-replay-of` header)."""


async def record(conn: AsyncConnection, parked: Parked) -> bool:
    """Record a parked message; False when a copy of it is recorded already (the same message
    id, replaying the same dead letter): copies on the wire are one dead letter."""
    inserted = await conn.execute(
        pg_insert(dead_letters)
        .values(**msgspec.structs.asdict(parked))
        .on_conflict_do_nothing(
            index_elements=[dead_letters.c.message_id, dead_letters.c.replay_of],
            index_where=dead_letters.c.message_id.is_not(None),
        )
        .returning(dead_letters.c.id)
    )
    return inserted.first() is not None


async def list_dead_letters(
    conn: AsyncConnection,
    *,
    kind: str | None,
    instance_id: UUID | None,
    before_id: int | None,
    limit: int,
) -> list[DeadLetterRow]:
    """Newest first; page with `before_id` (the last id of the previous page)."""
    c = dead_letters.c
    query = select(*_SUMMARY).order_by(c.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(c.kind == kind)
    if instance_id is not None:
        query = query.where(c.instance_id == instance_id)
    if before_id is not None:
        query = query.where(c.id < before_id)
    return [DeadLetterRow(**row._mapping) for row in await conn.execute(query)]


async def get_dead_letter(conn: AsyncConnection, letter_id: int) -> DeadLetterDetail:
    row = (
        await conn.execute(
            select(*_SUMMARY, dead_letters.c.body, dead_letters.c.headers).where(
                dead_letters.c.id == letter_id
            )
        )
    ).first()
    if row is None:
        raise DeadLetterNotFound(f"no dead letter {letter_id}")
    values = dict(row._mapping)
    values["body"] = bytes(values["body"]).decode("utf-8", errors="replace")
    return DeadLetterDetail(**values)


async def replay(conn: AsyncConnection, letter_id: int) -> list[PendingRow]:
    """Send the message back where it came from (through the outbox) and mark it replayed."""
    row = (
        await conn.execute(
            select(dead_letters).where(dead_letters.c.id == letter_id).with_for_update()
        )
    ).first()
    if row is None:
        raise DeadLetterNotFound(f"no dead letter {letter_id}")
    if row.origin_exchange is None or row.origin_routing_key is None:
        raise InvalidState(f"dead letter {letter_id} has no known origin to replay it to")
    try:
        message_id = UUID(row.message_id)
    except (TypeError, ValueError):
        message_id = new_message_id()
    pending = await enqueue(
        conn,
        [
            OutboxMessage(
                message_id=message_id,
                exchange=row.origin_exchange,
                routing_key=row.origin_routing_key,
                body=bytes(row.body),
                # The trace context it carried: the replay joins the saga's trace.
                headers={
                    REPLAY_OF: str(letter_id),
                    **{k: v for k, v in (row.headers or {}).items() if k in TRACE_HEADERS},
                },
            )
        ],
    )
    await conn.execute(
        update(dead_letters).where(dead_letters.c.id == letter_id).values(replayed_at=utcnow())
    )
    return pending


TRACE_HEADERS = ("traceparent", "tracestate")
REPLAY_OF = "x-warren-replay-of"
"""The header a replay carries: the id of the dead letter it replays."""


async def delete_dead_letter(conn: AsyncConnection, letter_id: int) -> None:
    deleted = await conn.execute(
        delete(dead_letters).where(dead_letters.c.id == letter_id).returning(dead_letters.c.id)
    )
    if deleted.first() is None:
        raise DeadLetterNotFound(f"no dead letter {letter_id}")
