"""The events, waits and event_deliveries tables: received events, the event waits under way,
and which event reached which instance. The service that uses them is
`orchestrator.service.events`.

A wait row is written and deleted only by the transaction that holds its instance's row lock
(the transition that began or ended the wait), so once a transaction has locked an instance,
its wait rows stay as read.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec
from sqlalchemy import select

# The rows are part of the API's schema (the client reads them too).
from orchestrator.api.schema import EventRow
from orchestrator.definitions.conditions import EVENT_ROOTS, MISSING, parse_path, resolve
from orchestrator.storage.database import driver
from orchestrator.storage.tables import events

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection

    from orchestrator.engine import Subscription

_json = msgspec.json.Encoder()

_INSERT = """
INSERT INTO warren.events (event_id, source, type, body, attributes, via, received_at)
VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7)
ON CONFLICT (source, event_id) DO NOTHING RETURNING seq"""

_WAIT_PATHS = "SELECT DISTINCT path FROM warren.waits WHERE event_type = $1"

_MATCHING = """
SELECT w.instance_id, w.wait_key FROM warren.waits w
JOIN unnest($2::text[], $3::text[]) AS u(p, v)
  ON w.path IS NOT DISTINCT FROM u.p AND w.value IS NOT DISTINCT FROM u.v::jsonb
WHERE w.event_type = $1 AND ($4::uuid[] IS NULL OR w.instance_id = ANY($4::uuid[]))
ORDER BY w.instance_id, w.began_at, w.wait_key"""

_OPEN = """
INSERT INTO warren.waits (instance_id, wait_key, event_type, path, value, began_at, parts,
                          contains)
SELECT i, k, t, p, v::jsonb, b, CASE WHEN ps IS NULL THEN NULL ELSE string_to_array(ps, '.') END,
       c::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
            $7::text[], $8::text[]) AS x(i, k, t, p, v, b, ps, c)
ON CONFLICT DO NOTHING"""

_END = """
DELETE FROM warren.waits w USING unnest($1::uuid[], $2::text[]) AS x(i, k)
WHERE w.instance_id = x.i AND w.wait_key = x.k"""

_DELIVER = """
INSERT INTO warren.event_deliveries (event_seq, instance_id, wait_key, delivered_at)
VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING event_seq"""

# Events older than the retention are deleted (`expire`): what is here is kept. The GIN index
# on the body finds the candidates by containment ($5); the path then says which value counts.
_KEPT = """
SELECT e.seq, e.body::text AS body FROM warren.events e
WHERE e.type = $1
  AND ($2::text[] IS NULL OR (e.body @> $5::jsonb AND e.body #> $2::text[] = $3::jsonb))
  AND NOT EXISTS (SELECT 1 FROM warren.event_deliveries d
                  WHERE d.event_seq = e.seq AND d.instance_id = $4)
ORDER BY e.seq LIMIT 1"""

# The safety net: a wait and a matching event that missed each other, each committed while the
# other was being written. Only a wait that began lately can have, with an event received since
# a little before it began (the window is far wider than any transaction): each such wait looks
# for its event as it did when it began, through the index, by the containment it stored.
_LEFT_BEHIND = """
SELECT w.instance_id, w.wait_key, e.seq, e.body::text AS body
FROM warren.waits w
CROSS JOIN LATERAL (
    SELECT e.seq, e.body FROM warren.events e
    WHERE e.type = w.event_type
      AND e.body @> w.contains
      AND (w.parts IS NULL OR e.body #> w.parts = w.value)
      AND e.received_at >= w.began_at - $2::interval
      AND NOT EXISTS (SELECT 1 FROM warren.event_deliveries d
                      WHERE d.event_seq = e.seq AND d.instance_id = w.instance_id)
    ORDER BY e.received_at, e.seq LIMIT 1
) e
WHERE w.began_at > now() - $2::interval
ORDER BY e.seq LIMIT $1"""

RACE_WINDOW = timedelta(minutes=10)
"""How far apart a wait's beginning and an event's arrival can be and still have missed each
other: the longest a transaction may take, with a wide margin."""

_COUNT = """
UPDATE warren.events SET started = started + $2, reached = reached + $3,
    problems = coalesce(problems || E'\\n' || $4, $4)
WHERE seq = $1"""

_EXPIRE = "DELETE FROM warren.events WHERE received_at < $1"


class KeptEvent(msgspec.Struct, frozen=True):
    seq: int
    body: dict[str, Any]


async def insert(
    conn: AsyncConnection,
    body: dict[str, Any],
    attributes: dict[str, Any],
    *,
    via: str,
    received_at: datetime,
) -> int | None:
    """Record a received event; None when one with its (source, id) is recorded already."""
    seq: int | None = await (await driver(conn)).fetchval(
        _INSERT,
        body["id"],
        body["source"],
        body["type"],
        _json.encode(body).decode(),
        _json.encode(attributes).decode(),
        via,
        received_at,
    )
    return seq


async def matching_waits(
    conn: AsyncConnection,
    body: dict[str, Any],
    instance_ids: list[UUID] | None = None,
) -> list[tuple[UUID, str]]:
    """(instance, wait key) of the waits under way that `body` satisfies (among
    `instance_ids` only, when given), oldest wait of each instance first."""
    db = await driver(conn)
    paths: list[str | None] = [row["path"] for row in await db.fetch(_WAIT_PATHS, body["type"])]
    wanted_paths: list[str | None] = []
    values: list[str | None] = []
    for path in paths:
        if path is None:
            wanted_paths.append(None)
            values.append(None)
            continue
        value = resolve(body, path, EVENT_ROOTS)
        if value is not MISSING:
            wanted_paths.append(path)
            values.append(_json.encode(value).decode())
    if not wanted_paths:
        return []
    rows = await db.fetch(_MATCHING, body["type"], wanted_paths, values, instance_ids)
    return [(UUID(bytes=row["instance_id"].bytes), row["wait_key"]) for row in rows]


async def open_waits(
    conn: AsyncConnection, opened: list[tuple[UUID, Subscription, datetime]]
) -> None:
    """Waits that began (instance, subscription, when)."""
    if not opened:
        return
    parts = [_parts(sub) for _, sub, _ in opened]
    await (await driver(conn)).execute(
        _OPEN,
        [instance_id for instance_id, _, _ in opened],
        [sub.key for _, sub, _ in opened],
        [sub.event_type for _, sub, _ in opened],
        [sub.path for _, sub, _ in opened],
        [None if sub.path is None else _json.encode(sub.value).decode() for _, sub, _ in opened],
        [began for _, _, began in opened],
        [None if p is None else ".".join(str(part) for part in p) for p in parts],
        [
            _json.encode({} if p is None else _containing(p, sub.value)).decode()
            for p, (_, sub, _) in zip(parts, opened, strict=True)
        ],
    )


def _parts(sub: Subscription) -> list[str | int] | None:
    return None if sub.path is None else parse_path(sub.path, EVENT_ROOTS)


async def end_waits(conn: AsyncConnection, ended: list[tuple[UUID, str]]) -> None:
    if ended:
        await (await driver(conn)).execute(
            _END, [instance_id for instance_id, _ in ended], [key for _, key in ended]
        )


async def deliver(
    conn: AsyncConnection, event_seq: int, instance_id: UUID, wait_key: str, now: datetime
) -> bool:
    """Note that the event reached the instance; False when it had already."""
    row = await (await driver(conn)).fetchval(_DELIVER, event_seq, instance_id, wait_key, now)
    return row is not None


async def kept_event(
    conn: AsyncConnection, instance_id: UUID, sub: Subscription
) -> KeptEvent | None:
    """The oldest event kept (received within the retention) that the wait `sub` takes and
    its instance has not had yet."""
    parts: list[str | int] | None = None
    value = contained = None
    if sub.path is not None:
        parts = parse_path(sub.path, EVENT_ROOTS)
        value = _json.encode(sub.value).decode()
        contained = _json.encode(_containing(parts, sub.value)).decode()
    row = await (await driver(conn)).fetchrow(
        _KEPT,
        sub.event_type,
        None if parts is None else [str(p) for p in parts],
        value,
        instance_id,
        contained,
    )
    return None if row is None else KeptEvent(row["seq"], msgspec.json.decode(row["body"]))


def _containing(parts: list[str | int], value: Any) -> Any:
    """A JSON value that every event holding `value` at `parts` contains, for the index. Below
    an array index containment cannot say which element: the array itself (any array contains
    ``[]``) is as far as it narrows."""
    first_index = next((i for i, part in enumerate(parts) if isinstance(part, int)), None)
    inner: Any = value if first_index is None else []
    for name in reversed(parts if first_index is None else parts[:first_index]):
        inner = {name: inner}
    return inner


async def left_behind(conn: AsyncConnection, limit: int) -> list[tuple[UUID, str, KeptEvent]]:
    """Waits under way, each with a kept event it takes that did not reach its instance: an
    event and a wait that began while it was being recorded can miss each other."""
    rows = await (await driver(conn)).fetch(_LEFT_BEHIND, limit, RACE_WINDOW)
    return [
        (
            UUID(bytes=row["instance_id"].bytes),
            row["wait_key"],
            KeptEvent(row["seq"], msgspec.json.decode(row["body"])),
        )
        for row in rows
    ]


async def count(
    conn: AsyncConnection, seq: int, *, started: int, reached: int, problems: list[str]
) -> None:
    if started or reached or problems:
        await (await driver(conn)).execute(
            _COUNT, seq, started, reached, "\n".join(problems) if problems else None
        )


async def expire(conn: AsyncConnection, before: datetime) -> int:
    """Forget the events received before `before` (and which instances they reached)."""
    status = await (await driver(conn)).execute(_EXPIRE, before)
    return int(status.split()[-1])


# ---- the read side -------------------------------------------------------------------------


async def list_events(
    conn: AsyncConnection,
    *,
    type: str | None,
    unmatched: bool,
    before_seq: int | None,
    limit: int,
) -> list[EventRow]:
    """Newest first."""
    e = events.c
    query = select(events)
    if type is not None:
        query = query.where(e.type == type)
    if unmatched:
        query = query.where(e.started == 0, e.reached == 0)
    if before_seq is not None:
        query = query.where(e.seq < before_seq)
    rows = await conn.execute(query.order_by(e.seq.desc()).limit(limit))
    return [_row(r) for r in rows]


async def get_event(conn: AsyncConnection, seq: int) -> EventRow | None:
    row = (await conn.execute(select(events).where(events.c.seq == seq))).first()
    return None if row is None else _row(row)


def _row(r: Any) -> EventRow:
    body = r.body
    return EventRow(
        seq=r.seq,
        id=r.event_id,
        source=r.source,
        type=r.type,
        subject=body.get("subject"),
        time=body.get("time"),
        data=body.get("data"),
        attributes=r.attributes,
        via=r.via,
        received_at=r.received_at,
        started=r.started,
        reached=r.reached,
        problems=r.problems,
    )
