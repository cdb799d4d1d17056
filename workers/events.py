"""Publishing a service's own domain events, exactly when its transaction commits.

`publish_event` writes the event into the service's `warren.outbox` table in the caller's
transaction: it is published (to the events exchange, routed by its type, as a CloudEvent) if
and only if that transaction commits. A worker process's relay publishes it; inside a step
handler, `ctx.publish_event(...)` does the same in the handler's transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.errors import EventInvalid
from orchestrator.messaging.cloudevents import CloudEvent, event_message, validate
from orchestrator.messaging.envelope import new_message_id, utcnow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    from orchestrator.messaging.topology import Topology
    from orchestrator.persistence.outbox import PendingRow


async def publish_event(
    conn: AsyncConnection | AsyncSession,
    *,
    type: str,
    data: Any,
    source: str,
    subject: str | None = None,
    id: str | None = None,
    dataversion: int = 1,
    topology: Topology | None = None,
) -> CloudEvent:
    """Write the event `type` with `data` to the outbox in `conn`'s transaction; return it.

    `source` names the emitter (``/payments``); `id` is unique within it (a new UUIDv7 when not
    given: pass your own to make a retried write the same event). `dataversion` is the shape of
    `data` (see `upcaster`). `topology` names the events exchange (``warren.events`` unless the
    service uses another WARREN_NAMESPACE). `EventInvalid` for a malformed type or source, or
    data that is not JSON. A worker process's outbox sweeper publishes it after the commit."""
    event, _ = await write_event(
        conn,
        type=type,
        data=data,
        source=source,
        subject=subject,
        id=id,
        dataversion=dataversion,
        topology=topology,
    )
    return event


async def write_event(
    conn: AsyncConnection | AsyncSession,
    *,
    type: str,
    data: Any,
    source: str,
    subject: str | None,
    id: str | None,
    dataversion: int,
    topology: Topology | None,
) -> tuple[CloudEvent, PendingRow]:
    """`publish_event`, also returning the outbox row (to publish right after the commit)."""
    # Imported here: `from workers import publish_event` loads no database code.
    from sqlalchemy.ext.asyncio import AsyncSession

    from orchestrator.messaging.topology import Topology
    from orchestrator.observability import tracing
    from orchestrator.persistence.outbox import enqueue

    event = validate(
        CloudEvent(
            id=id or str(new_message_id()),
            source=source,
            type=type,
            time=utcnow(),
            subject=subject,
            dataversion=dataversion,
            traceparent=tracing.current_traceparent(),
            data=data,
        )
    )
    try:
        message = event_message(event, topology or Topology())
    except TypeError as exc:  # msgspec: a value JSON has no form for
        raise EventInvalid(f"event {type!r}: data cannot be sent as JSON: {exc}") from exc
    connection = await conn.connection() if isinstance(conn, AsyncSession) else conn
    [row] = await enqueue(connection, [message])
    return event, row
