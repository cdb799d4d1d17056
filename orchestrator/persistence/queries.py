"""The read side: lists and pages served from indexed columns and snapshots, never by
replaying history."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import msgspec
from sqlalchemy import func, or_, select, text, tuple_

# The rows are part of the API's schema (the client reads them too); re-exported here.
from orchestrator.api.schema import DefinitionSummary as DefinitionSummary
from orchestrator.api.schema import HistoryRow as HistoryRow
from orchestrator.api.schema import InstanceRow as InstanceRow
from orchestrator.api.schema import StoredDefinition as StoredDefinition
from orchestrator.engine.vocabulary import DISPATCH_EVENTS, FAILURE_EVENTS
from orchestrator.errors import WarrenError
from orchestrator.storage.tables import definitions, history, instances

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


class CursorInvalid(WarrenError):
    """A pagination cursor that this server did not hand out."""


class InstanceFilter(msgspec.Struct, frozen=True, kw_only=True):
    saga: str | None = None
    status: str | None = None
    correlation_key: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None


class _Cursor(msgspec.Struct, array_like=True, frozen=True):
    created_at: Annotated[datetime, msgspec.Meta(tz=True)]
    id: UUID


def representable(moment: datetime) -> bool:
    """Whether a time can be sent to Postgres: its UTC instant must fall within years 1 to 9999
    (Python's range, narrower than timestamptz's), e.g. not 0001-01-01T00:00:00+14:00."""
    try:
        moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return False
    return True


def encode_cursor(row: InstanceRow) -> str:
    raw = msgspec.json.encode(_Cursor(row.created_at, row.id))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> _Cursor:
    invalid = f"cursor {cursor[:40]!r} is not one this API handed out"
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = msgspec.json.decode(raw, type=_Cursor)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise CursorInvalid(invalid) from exc
    if not representable(decoded.created_at):
        raise CursorInvalid(invalid)
    return decoded


async def list_instances(
    conn: AsyncConnection, where: InstanceFilter, *, limit: int, cursor: str | None
) -> tuple[list[InstanceRow], str | None]:
    """Newest first, keyset-paginated on (created_at, id): rows written while a client pages
    never shift the pages after its cursor, so nothing is skipped or shown twice."""
    c = instances.c
    conditions: list[Any] = []
    if where.saga is not None:
        conditions.append(c.saga_name == where.saga)
    if where.status is not None:
        conditions.append(c.status == where.status)
    if where.correlation_key is not None:
        conditions.append(c.correlation_key == where.correlation_key)
    if where.created_after is not None:
        conditions.append(c.created_at >= where.created_after)
    if where.created_before is not None:
        conditions.append(c.created_at < where.created_before)
    if where.updated_after is not None:
        conditions.append(c.updated_at >= where.updated_after)
    if where.updated_before is not None:
        conditions.append(c.updated_at < where.updated_before)
    if cursor is not None:
        after = decode_cursor(cursor)
        conditions.append(tuple_(c.created_at, c.id) < tuple_(after.created_at, after.id))
    query = (
        select(
            c.id,
            c.saga_name,
            c.saga_version,
            c.status,
            c.correlation_key,
            c.created_at,
            c.updated_at,
        )
        .where(*conditions)
        .order_by(c.created_at.desc(), c.id.desc())
        .limit(limit + 1)
    )
    rows = [
        InstanceRow(
            id=r.id,
            saga=r.saga_name,
            version=r.saga_version,
            status=r.status,
            correlation_key=r.correlation_key,
            created_at=r.created_at,
            updated_at=r.updated_at,
        )
        for r in await conn.execute(query)
    ]
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1]) if len(rows) > limit else None
    return page, next_cursor


async def instance_history(
    conn: AsyncConnection, instance_id: UUID, *, after_seq: int, limit: int
) -> list[HistoryRow]:
    h = history.c
    rows = await conn.execute(
        select(h.seq, h.type, h.step, h.phase, h.attempt, h.pool, h.recorded_at, h.data)
        .where(h.instance_id == instance_id, h.seq > after_seq)
        .order_by(h.seq)
        .limit(limit)
    )
    return [
        HistoryRow(
            seq=r.seq,
            type=r.type,
            step=r.step,
            phase=r.phase,
            attempt=r.attempt,
            pool=r.pool,
            recorded_at=r.recorded_at,
            data=r.data,
        )
        for r in rows
    ]


async def instance_exists(conn: AsyncConnection, instance_id: UUID) -> bool:
    return (
        await conn.scalar(select(instances.c.id).where(instances.c.id == instance_id)) is not None
    )


async def list_definitions(conn: AsyncConnection) -> list[DefinitionSummary]:
    d = definitions.c
    rows = await conn.execute(
        select(
            d.name,
            func.max(d.version).label("latest"),
            func.array_agg(d.version).label("versions"),
            func.max(d.registered_at).label("registered_at"),
        )
        .group_by(d.name)
        .order_by(d.name)
    )
    return [
        DefinitionSummary(
            name=r.name,
            latest_version=r.latest,
            versions=sorted(r.versions),
            registered_at=r.registered_at,
        )
        for r in rows
    ]


async def definition_versions(conn: AsyncConnection, name: str) -> list[StoredDefinition]:
    d = definitions.c
    rows = await conn.execute(
        select(d.version, d.content_hash, d.registered_at, d.body)
        .where(d.name == name)
        .order_by(d.version)
    )
    return [
        StoredDefinition(
            version=r.version,
            content_hash=r.content_hash,
            registered_at=r.registered_at,
            body=r.body,
        )
        for r in rows
    ]


class PoolActivity(msgspec.Struct, frozen=True, kw_only=True):
    dispatched: int
    failed: int


async def pool_activity(conn: AsyncConnection, *, window_seconds: int) -> dict[str, PoolActivity]:
    """Commands dispatched and attempts failed per pool in the last `window_seconds`."""
    h = history.c
    dispatched = h.type.in_(DISPATCH_EVENTS)
    failed = h.type.in_(FAILURE_EVENTS)
    rows = await conn.execute(
        select(
            h.pool,
            func.count().filter(dispatched).label("dispatched"),
            func.count().filter(failed).label("failed"),
        )
        .where(
            h.pool.is_not(None),
            h.recorded_at > func.now() - text("make_interval(secs => :window)"),
            or_(dispatched, failed),
        )
        .group_by(h.pool),
        {"window": window_seconds},
    )
    return {r.pool: PoolActivity(dispatched=r.dispatched, failed=r.failed) for r in rows}


async def steps_in_flight(conn: AsyncConnection) -> list[tuple[str, int, str, str]]:
    """(saga, version, step, step status) of every step with a command out right now."""
    rows = await conn.execute(
        text(
            "SELECT i.saga_name, i.saga_version, s.key AS step, s.value->>'status' AS status "
            "FROM warren.instances i, jsonb_each(i.state->'steps') s "
            "WHERE i.status IN ('running', 'compensating') "
            "AND s.value->>'status' IN ('running', 'compensating')"
        )
    )
    return [(r.saga_name, r.saga_version, r.step, r.status) for r in rows]
