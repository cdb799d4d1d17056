"""The instances and history tables: the snapshot row and its append-only event log, written
in the transaction of the message that changed them, and the read side (lists, pages and the
pools page, served from indexed columns and snapshots, never by replaying history).

`save_many` is the write half of the core rule, and the only writer of instances: everything
the transitions produced (a start's included) goes into the caller's transaction, so it commits
(or vanishes) together with the inbox row.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import msgspec
from sqlalchemy import func, or_, select, text, tuple_

# The rows are part of the API's schema (the client reads them too); re-exported here.
from orchestrator.api.schema import HistoryRow as HistoryRow
from orchestrator.api.schema import InstanceRow as InstanceRow
from orchestrator.engine import InstanceState, Transition
from orchestrator.engine.replay import Recorded
from orchestrator.engine.state import upgraded
from orchestrator.engine.vocabulary import DISPATCH_EVENTS, FAILURE_EVENTS, Phase
from orchestrator.errors import Conflict, InstanceNotFound, WarrenError
from orchestrator.messaging.outgoing import command_for, event_from, reply_to_parent
from orchestrator.persistence import events, timers
from orchestrator.persistence.inbox import fresh_cte
from orchestrator.persistence.outbox import (
    OutboxMessage,
    PendingRow,
    outbox_columns,
    pending_rows,
    queue_ctes,
)
from orchestrator.storage.database import driver
from orchestrator.storage.tables import history, instances

if TYPE_CHECKING:
    from collections.abc import Collection

    from sqlalchemy import ColumnElement
    from sqlalchemy.ext.asyncio import AsyncConnection

    from orchestrator.engine.replay import Cause
    from orchestrator.messaging.topology import Topology

# The statements on every message's path, sent on the driver connection (storage.database.driver):
# fixed texts, prepared once per connection, one round trip for any number of rows.
# Starts, in one statement: the ids of those inserted (a taken id or key is not).
_INSERT_NEW = """
INSERT INTO warren.instances (id, saga_name, saga_version, status, seq, state, created_at,
                              updated_at, idempotency_key, request_hash, correlation_key,
                              traceparent, parent_id)
SELECT i, n, v, st, sq, s::jsonb, c, u, k, h, ck, tp, p
FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::int[], $6::text[],
            $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], $11::text[],
            $12::text[], $13::uuid[]) AS x(i, n, v, st, sq, s, c, u, k, h, ck, tp, p)
ORDER BY i
ON CONFLICT DO NOTHING RETURNING id"""

_LOCK_MANY = """
SELECT id, state::text AS state FROM warren.instances
WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"""

# What a batch of transitions writes, in one statement: the snapshots (each only if the stored
# one is still the snapshot it was decided from), the history, the commands and events for the
# outbox, and the outbox rows this process published since its last transaction (`forget`).
_WRITE_MANY = f"""
WITH updated AS (
    UPDATE warren.instances AS i
    SET status = u.status, seq = u.seq, state = u.state::jsonb, updated_at = u.updated_at
    FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::timestamptz[], $6::int[])
        AS u(id, status, seq, state, updated_at, since)
    WHERE i.id = u.id AND i.seq = u.since
    RETURNING 1),
logged AS (
    INSERT INTO warren.history (instance_id, seq, type, step, phase, attempt, pool, data,
                                recorded_at, cause)
    SELECT i, s, t, st, ph, a, p, d::jsonb, r, c::jsonb
    FROM unnest($7::uuid[], $8::int[], $9::text[], $10::text[], $11::text[], $12::int[],
                $13::text[], $14::text[], $15::timestamptz[], $16::text[])
        AS x(i, s, t, st, ph, a, p, d, r, c)
    -- Only if every snapshot was updated (else its history would collide with the rows of
    -- the transition that moved it on): the caller sees the count and refuses the write.
    WHERE (SELECT count(*) FROM updated) = cardinality($1::uuid[])),
{queue_ctes(17)}
SELECT (SELECT count(*) FROM updated) AS updated, q.ids, q.message_ids
FROM (SELECT array_agg(id ORDER BY id) AS ids, array_agg(message_id ORDER BY id) AS message_ids
      FROM queued) AS q"""  # noqa: S608 - parameter numbers only

# A batch of replies: claimed in the inbox, and the instances of those seen for the first time
# locked and read, in one statement (the inbox first: the lock reads what it claimed).
_CLAIM_AND_LOCK = f"""
WITH {fresh_cte(1, 2)},
locked AS (
    SELECT i.id, i.state FROM warren.instances AS i
    WHERE i.id IN (SELECT x.instance_id FROM unnest($3::uuid[], $4::uuid[])
                       AS x(message_id, instance_id)
                   JOIN fresh USING (message_id))
    ORDER BY i.id FOR UPDATE)
SELECT message_id, NULL::uuid AS id, NULL::text AS state FROM fresh
UNION ALL
SELECT NULL, id, state::text FROM locked"""  # noqa: S608 - parameter numbers only

# Not on a message's path: the steps with a command out now, for the pools page.
_STEPS_IN_FLIGHT = text(
    "SELECT i.saga_name, i.saga_version, s.key AS step, s.value->>'status' AS status "
    "FROM warren.instances i, jsonb_each(i.state->'steps') s "
    "WHERE i.status IN ('running', 'compensating') "
    "AND s.value->>'status' IN ('running', 'compensating')"
)


async def load(conn: AsyncConnection, instance_id: UUID) -> InstanceState:
    """Read an instance (to lock it and change it: `load_many`)."""
    state = await conn.scalar(select(instances.c.state).where(instances.c.id == instance_id))
    if state is None:
        raise InstanceNotFound(f"no saga instance {instance_id}")
    return upgraded(msgspec.convert(state, InstanceState))


async def traceparent(conn: AsyncConnection, instance_id: UUID) -> str | None:
    """The trace context the instance was started in (None when it was not traced)."""
    value: str | None = await conn.scalar(
        select(instances.c.traceparent).where(instances.c.id == instance_id)
    )
    return value


class EarlierStart(msgspec.Struct, frozen=True, kw_only=True):
    """An instance a start's key or id already names, and the fingerprint of its request."""

    id: UUID
    request_hash: str | None


async def started_with_key(
    conn: AsyncConnection, saga: str, idempotency_key: str
) -> EarlierStart | None:
    """The instance of `saga` started under `idempotency_key`, if any."""
    return await _earlier_start(
        conn, (instances.c.saga_name == saga) & (instances.c.idempotency_key == idempotency_key)
    )


async def started_with_id(conn: AsyncConnection, instance_id: UUID) -> EarlierStart | None:
    """The instance with this id (chosen by the caller of a start), if any."""
    return await _earlier_start(conn, instances.c.id == instance_id)


async def _earlier_start(conn: AsyncConnection, where: ColumnElement[bool]) -> EarlierStart | None:
    row = (
        await conn.execute(select(instances.c.id, instances.c.request_hash).where(where))
    ).first()
    return None if row is None else EarlierStart(id=row.id, request_hash=row.request_hash)


async def pinned(conn: AsyncConnection, instance_id: UUID) -> tuple[str, int] | None:
    """The saga name and version an instance is pinned to; None when there is no such instance."""
    row = (
        await conn.execute(
            select(instances.c.saga_name, instances.c.saga_version).where(
                instances.c.id == instance_id
            )
        )
    ).first()
    return None if row is None else (row.saga_name, row.saga_version)


_json = msgspec.json.Encoder()
_state = msgspec.json.Decoder(InstanceState)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewInstance:
    """What a start stores beside the first snapshot: the keys that make it idempotent (the
    unique index on them settles a race), and the trace it started in."""

    idempotency_key: str | None = None
    request_hash: str | None = None
    correlation_key: str | None = None
    traceparent: str | None = None


class AlreadyStarted(WarrenError):
    """A start's instance id, or its (saga, idempotency key), is taken: nothing was written.
    The starter turns it into the earlier instance, or an `IdempotencyConflict`."""


@dataclass(frozen=True, slots=True)
class Written:
    """A transition to write, with the message that caused it and the trace context its
    timers and commands carry on."""

    transition: Transition
    causation_id: UUID | None = None
    traceparent: str | None = None
    new: NewInstance | None = None
    """Set on an instance's first transition (its start): the snapshot is inserted."""
    cause: Cause | None = None
    """The engine event it decided: kept on its first history row, for replay."""


async def load_many(conn: AsyncConnection, instance_ids: list[UUID]) -> dict[UUID, InstanceState]:
    """Lock and read several instances in one statement (in id order: no lock-order cycles
    between two batches); a missing one is `InstanceNotFound`."""
    wanted = sorted(set(instance_ids))
    rows = await (await driver(conn)).fetch(_LOCK_MANY, wanted)
    return _all_found(wanted, {UUID(bytes=row["id"].bytes): _decode(row["state"]) for row in rows})


def _decode(stored: str) -> InstanceState:
    return upgraded(_state.decode(stored))


def _all_found(
    wanted: Collection[UUID], found: dict[UUID, InstanceState]
) -> dict[UUID, InstanceState]:
    """`found`, if it holds every instance `wanted`; else `InstanceNotFound` (the first, in id
    order)."""
    missing = sorted(set(wanted) - found.keys())
    if missing:
        raise InstanceNotFound(f"no saga instance {missing[0]}")
    return found


async def claim_and_lock(
    conn: AsyncConnection, consumer: str, messages: list[tuple[UUID, UUID]]
) -> tuple[set[UUID], dict[UUID, InstanceState]]:
    """Claim (message id, instance id) pairs in `consumer`'s inbox, and lock and read the
    instances of the messages seen for the first time (in id order), in one statement: the
    fresh message ids, and their instances. A missing instance is `InstanceNotFound`."""
    rows = await (await driver(conn)).fetch(
        _CLAIM_AND_LOCK,
        consumer,
        sorted({message_id for message_id, _ in messages}),
        [message_id for message_id, _ in messages],
        [instance_id for _, instance_id in messages],
    )
    fresh: set[UUID] = set()
    found: dict[UUID, InstanceState] = {}
    for row in rows:
        if row["message_id"] is not None:
            fresh.add(UUID(bytes=row["message_id"].bytes))
        else:
            found[UUID(bytes=row["id"].bytes)] = _decode(row["state"])
    wanted = {instance_id for message_id, instance_id in messages if message_id in fresh}
    return fresh, _all_found(wanted, found)


@dataclass(frozen=True, slots=True)
class Saved:
    pending: list[PendingRow]
    """The outbox rows written, to publish after the commit."""
    taken: set[UUID]
    """Starts not written: their instance id, or their idempotency key, was taken."""


async def save_many(
    conn: AsyncConnection,
    written: list[Written],
    topology: Topology,
    *,
    forget: Collection[int] = (),
) -> Saved:
    """Write what several transitions produced: each instance's latest snapshot, its history,
    and the commands and events they send, in one statement for all of them (with the
    published outbox rows to `forget`); timers and waits in one more each, when there are any.

    Starts' snapshots are inserted first, in one statement: a start whose id or key is taken
    is left out, nothing of it written (`Saved.taken`). Any other snapshot is updated only if
    the stored one is still the snapshot its first transition here was decided from (whose seq
    comes right before that transition's history): the row lock of `load_many` guarantees it,
    and a `Conflict` says a path wrote without it."""
    taken = await _insert_many(conn, [item for item in written if item.new is not None])
    if taken:
        written = [item for item in written if item.transition.instance.id not in taken]
    latest: dict[UUID, InstanceState] = {}
    since: dict[UUID, int] = {}
    for item in written:
        transition = item.transition
        if item.new is None and transition.history:
            instance_id = transition.instance.id
            since.setdefault(instance_id, transition.history[0].seq - 1)
            latest[instance_id] = transition.instance
    states = list(latest.values())
    events = [
        (item.transition.instance.id, event, item.cause if index == 0 else None)
        for item in written
        for index, event in enumerate(item.transition.history)
    ]
    messages = _messages(written, topology)
    if not states and not events and not messages and not forget:
        return Saved([], taken)
    row = await (await driver(conn)).fetchrow(
        _WRITE_MANY,
        [state.id for state in states],
        [state.status.value for state in states],
        [state.seq for state in states],
        [_json.encode(state).decode() for state in states],
        [state.updated_at for state in states],
        [since[state.id] for state in states],
        [instance_id for instance_id, _, _ in events],
        [e.seq for _, e, _ in events],
        [e.type for _, e, _ in events],
        [e.step for _, e, _ in events],
        [e.phase.value if e.phase else None for _, e, _ in events],
        [e.attempt for _, e, _ in events],
        [e.pool for _, e, _ in events],
        [_json.encode(e.data).decode() for _, e, _ in events],
        [e.at for _, e, _ in events],
        [_json.encode(cause).decode() if cause is not None else None for _, _, cause in events],
        *outbox_columns(messages),
        list(forget),
    )
    if row["updated"] != len(states):
        raise Conflict(
            "a saga instance changed while a transition of it was being written; the message "
            "that caused the transition is handled again",
            retryable=True,
        )
    await timers.insert_many(
        conn,
        [
            (item.transition.instance.id, item.traceparent, timer)
            for item in written
            for timer in item.transition.timers
        ],
    )
    await _record_waits(conn, written)
    return Saved(pending_rows(messages, row["ids"] or [], row["message_ids"] or []), taken)


def _messages(written: list[Written], topology: Topology) -> list[OutboxMessage]:
    """What the transitions send: commands, answers to parent sagas, domain events."""
    messages = [
        command_for(
            item.transition.instance,
            dispatch,
            topology,
            causation_id=item.causation_id,
            traceparent=item.traceparent,
        )
        for item in written
        for dispatch in item.transition.dispatches
    ]
    messages += [
        reply_to_parent(
            item.transition.parent_reply,
            topology,
            causation_id=item.causation_id,
            traceparent=item.traceparent,
        )
        for item in written
        if item.transition.parent_reply is not None
    ]
    messages += [
        event_from(item.transition.instance, event, topology, traceparent=item.traceparent)
        for item in written
        for event in item.transition.events
    ]
    return messages


async def _insert_many(conn: AsyncConnection, starts: list[Written]) -> set[UUID]:
    """Insert started instances' snapshots; the ids of those whose id or key was taken. A
    concurrent start with the same key waits here until the first one commits, then finds it
    taken."""
    if not starts:
        return set()
    states = [item.transition.instance for item in starts]
    news = [item.new for item in starts if item.new is not None]
    rows = await (await driver(conn)).fetch(
        _INSERT_NEW,
        [state.id for state in states],
        [state.saga for state in states],
        [state.version for state in states],
        [state.status.value for state in states],
        [state.seq for state in states],
        [_json.encode(state).decode() for state in states],
        [state.created_at for state in states],
        [state.updated_at for state in states],
        [new.idempotency_key for new in news],
        [new.request_hash for new in news],
        [new.correlation_key for new in news],
        [new.traceparent for new in news],
        [state.parent.instance_id if state.parent is not None else None for state in states],
    )
    inserted = {UUID(bytes=row["id"].bytes) for row in rows}
    return {state.id for state in states} - inserted


async def _record_waits(conn: AsyncConnection, written: list[Written]) -> None:
    """The event waits that began (matched against arriving events from now on) and those
    that are over (their rows and timeouts go)."""
    opened = [
        (item.transition.instance.id, sub, item.transition.instance.updated_at)
        for item in written
        for sub in item.transition.subscriptions
    ]
    ended = [
        (item.transition.instance.id, key)
        for item in written
        for key in item.transition.waits_ended
    ]
    if opened:
        await events.open_waits(conn, opened)
    if ended:
        await events.end_waits(conn, ended)
        await timers.cancel_timeouts(conn, [(i, key, Phase.FORWARD, 1) for i, key in ended])


# ---- the read side -------------------------------------------------------------------------


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
            c.saga_name.label("saga"),
            c.saga_version.label("version"),
            c.status,
            c.correlation_key,
            c.created_at,
            c.updated_at,
        )
        .where(*conditions)
        .order_by(c.created_at.desc(), c.id.desc())
        .limit(limit + 1)
    )
    rows = [InstanceRow(**r._mapping) for r in await conn.execute(query)]
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
    return [HistoryRow(**r._mapping) for r in rows]


class StoredInstance(msgspec.Struct, frozen=True, kw_only=True):
    """What replay reads of an instance: its pinned definition, its snapshot (decoded JSON)
    and its history with the causes."""

    id: UUID
    saga: str
    version: int
    snapshot: Any
    history: list[Recorded]


async def stored_instances(
    conn: AsyncConnection,
    *,
    ids: list[UUID] | None = None,
    after: UUID | None = None,
    limit: int = 100,
) -> list[StoredInstance]:
    """Instances with their whole history, in id order: those of `ids`, or a page of at most
    `limit` after the id `after`. Two statements for the page; the history up to each
    snapshot's seq (a transition committed between the two is the next verification's)."""
    c, h = instances.c, history.c
    query = select(c.id, c.saga_name, c.saga_version, c.seq, c.state).order_by(c.id).limit(limit)
    if ids is not None:
        query = query.where(c.id.in_(ids))
    elif after is not None:
        query = query.where(c.id > after)
    found = (await conn.execute(query)).all()
    rows: dict[UUID, list[Recorded]] = {row.id: [] for row in found}
    upto = {row.id: row.seq for row in found}
    if rows:
        logged = await conn.execute(
            select(
                h.instance_id,
                h.seq,
                h.type,
                h.step,
                h.phase,
                h.attempt,
                h.pool,
                h.data,
                h.recorded_at,
                h.cause,
            )
            .where(h.instance_id.in_(list(rows)))
            .order_by(h.instance_id, h.seq)
        )
        for r in logged:
            if r.seq > upto[r.instance_id]:
                continue
            rows[r.instance_id].append(
                Recorded(
                    seq=r.seq,
                    type=r.type,
                    at=r.recorded_at,
                    step=r.step,
                    phase=r.phase,
                    attempt=r.attempt,
                    pool=r.pool,
                    data=r.data,
                    cause=r.cause,
                )
            )
    return [
        StoredInstance(
            id=row.id,
            saga=row.saga_name,
            version=row.saga_version,
            snapshot=row.state,
            history=rows[row.id],
        )
        for row in found
    ]


async def instance_exists(conn: AsyncConnection, instance_id: UUID) -> bool:
    return (
        await conn.scalar(select(instances.c.id).where(instances.c.id == instance_id)) is not None
    )


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
    rows = await conn.execute(_STEPS_IN_FLIGHT)
    return [(r.saga_name, r.saga_version, r.step, r.status) for r in rows]
