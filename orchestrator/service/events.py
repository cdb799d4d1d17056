"""Events in: each received event is recorded once, starts the sagas whose triggers take it,
and reaches the waits it satisfies, all in one transaction.

An event comes from the broker (the orchestrators' events queue, bound to the event types the
registered definitions name) or from the API (`POST /v1/events`, which also publishes it for
everyone else). Either way it is first brought to its current shape (upcasters) and checked
against the schemas the definitions declare for its type; one that fails is refused (422 at the
API, dead-lettered from the broker) and records nothing.

Exactly once: the inbox drops a copy of an event already received (same source and id); a
trigger's instance id is derived from the event, so even a copy the inbox no longer knows
starts nothing new; `event_deliveries` lets an event reach each instance at most once.
Nothing lost to timing: an event no wait takes yet is kept (for the retention) and a wait that
begins later takes it (`transitions.take_kept_events`); `sweep` catches the pair that began
while the other was being committed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid5

import msgspec

from orchestrator.definitions import Saga, Trigger, WaitFor
from orchestrator.definitions.conditions import EVENT_ROOTS, MISSING, map_input, resolve
from orchestrator.engine import EventReceived
from orchestrator.errors import InputInvalid
from orchestrator.messaging.cloudevents import CloudEvent, event_message
from orchestrator.messaging.envelope import utcnow
from orchestrator.messaging.event_schemas import check_event_data
from orchestrator.messaging.versions import UPCASTERS
from orchestrator.observability import tracing
from orchestrator.persistence import definitions as stored
from orchestrator.persistence import events, inbox, instances
from orchestrator.persistence.outbox import enqueue
from orchestrator.service.starter import InputValidator
from orchestrator.service.transitions import Incoming, TransitionService, apply_events, start
from orchestrator.storage.database import transaction

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from orchestrator.messaging.relay import Relay
    from orchestrator.messaging.topology import Topology
    from orchestrator.persistence.definitions import DefinitionCache
    from orchestrator.persistence.outbox import PendingRow

log = logging.getLogger(__name__)

EVENTS_CONSUMER = "events"
"""The inbox consumer of received events."""
_EVENT_IDS = UUID("5d2e8f3a-61b4-4c1e-9f0d-7a8b9c0d1e2f")
_TRIGGERED = UUID("a3c9e1f4-2b7d-4e6a-8c5f-0d1e2f3a4b5c")


def event_message_id(event: CloudEvent) -> UUID:
    """The inbox id of an event: CloudEvents ids are unique per source."""
    return uuid5(_EVENT_IDS, f"{event.source}\n{event.id}")


def triggered_instance_id(saga: str, event: CloudEvent) -> UUID:
    """The instance a trigger of `saga` starts for `event`: one per event, however delivered."""
    return uuid5(_TRIGGERED, f"{saga}\n{event.source}\n{event.id}")


def event_body(event: CloudEvent) -> dict[str, Any]:
    """The event as paths read it and waits receive it."""
    return {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "subject": event.subject,
        "time": event.time.isoformat() if event.time is not None else None,
        "data": event.data,
    }


def _attributes(event: CloudEvent) -> dict[str, Any]:
    """The attributes `event_body` leaves out (none that is unset)."""
    body = event_body(event)
    return {
        name: value
        for name, value in msgspec.to_builtins(event).items()
        if name not in body and value is not None
    }


class EventRoutes:
    """What the registered definitions say about each event type: the triggers of each
    saga's newest version, the schemas, and every type any version listens to (to bind the
    events queue to). Re-read when a definition was registered since."""

    def __init__(self, definitions: DefinitionCache) -> None:
        self.definitions = definitions
        self._seen: tuple[int, datetime | None] = (-1, None)
        self._triggers: dict[str, list[tuple[Saga, Trigger]]] = {}
        self._schemas: dict[str, list[dict[str, Any]]] = {}
        self.types: frozenset[str] = frozenset()

    async def refresh(self, conn: AsyncConnection) -> None:
        seen = await stored.registered_marker(conn)
        if seen == self._seen:
            return
        sagas = [await self.definitions.get(conn, n, v) for n, v in await stored.keys(conn)]
        newest: dict[str, Saga] = {}
        for saga in sagas:
            if saga.name not in newest or newest[saga.name].version < saga.version:
                newest[saga.name] = saga
        triggers: dict[str, list[tuple[Saga, Trigger]]] = {}
        schemas: dict[str, list[dict[str, Any]]] = {}
        for saga in sorted(newest.values(), key=lambda s: s.name):
            for trigger in saga.triggers:
                triggers.setdefault(trigger.event, []).append((saga, trigger))
            for event_type, schema in (saga.event_schemas or {}).items():
                schemas.setdefault(event_type, []).append(schema)
        types: set[str] = set()
        for saga in sagas:
            types |= {trigger.event for trigger in saga.triggers}
            types |= set(saga.event_schemas or {})
            types |= {n.event for n in saga.walk() if isinstance(n, WaitFor) and n.event}
        self._triggers, self._schemas, self.types = triggers, schemas, frozenset(types)
        self._seen = seen

    def triggers(self, event_type: str) -> list[tuple[Saga, Trigger]]:
        return self._triggers.get(event_type, [])

    def schemas(self, event_type: str) -> list[dict[str, Any]]:
        return self._schemas.get(event_type, [])


@dataclass(slots=True)
class Receipt:
    """What one received event did."""

    id: str
    source: str
    type: str
    seq: int | None = None
    """Its number in the events table; None for a duplicate."""
    duplicate: bool = False
    started: list[UUID] = field(default_factory=list)
    """The instances its triggers started."""
    reached: list[tuple[UUID, str]] = field(default_factory=list)
    """The (instance, wait) it satisfied."""
    problems: list[str] = field(default_factory=list)
    """Why a trigger that matched started nothing (its input did not fit)."""


class EventReceiver(TransitionService):
    def __init__(
        self,
        engine: AsyncEngine,
        relay: Relay,
        topology: Topology,
        definitions: DefinitionCache | None = None,
    ) -> None:
        super().__init__(engine, relay, topology, definitions)
        self.routes = EventRoutes(self.definitions)
        self.inputs = InputValidator()

    async def prepare(self, event: CloudEvent) -> CloudEvent:
        """`event` in its current shape, checked against its type's schemas: `UnknownVersion`
        (a `MessageError`) for a version newer than any upcaster knows, `EventInvalid` for
        data that does not fit."""
        return (await self.prepare_many([event]))[0]

    async def prepare_many(self, received: list[CloudEvent]) -> list[CloudEvent]:
        """`prepare` for events that arrived together: the definitions are read once."""
        async with transaction(self.engine) as conn:
            await self.routes.refresh(conn)
        return [self._current(event) for event in received]

    def _current(self, event: CloudEvent) -> CloudEvent:
        data, version = UPCASTERS.upcast(event.type, event.dataversion, event.data)
        if version != event.dataversion:
            event = msgspec.structs.replace(event, data=data, dataversion=version)
        check_event_data(self.routes.schemas(event.type), event)
        return event

    async def receive(self, event: CloudEvent, *, via: str) -> Receipt:
        """Record and apply one event (`prepare`d) in a transaction of its own; an event
        posted to the API is also published for the other subscribers of its type."""
        return (await self.receive_many([event], via=via))[0]

    async def receive_many(self, received: list[CloudEvent], *, via: str) -> list[Receipt]:
        """Record and apply events in the order given, in one transaction."""
        receipts: list[Receipt] = []
        pending: list[PendingRow] = []
        async with transaction(self.engine) as conn:
            await self.routes.refresh(conn)  # once for the batch: the triggers it starts
            for event in received:
                with tracing.span(
                    "event.receive",
                    attributes={"warren.event.type": event.type, "warren.event.id": event.id},
                ):
                    receipt, rows = await self.record(conn, event, via=via)
                receipts.append(receipt)
                pending += rows
                if via == "api" and not receipt.duplicate:
                    pending += await enqueue(conn, [event_message(event, self.topology)])
        await self.relay.publish_committed(pending)
        return receipts

    async def record(
        self, conn: AsyncConnection, event: CloudEvent, *, via: str
    ) -> tuple[Receipt, list[PendingRow]]:
        receipt = Receipt(id=event.id, source=event.source, type=event.type)
        if not await inbox.claim_many(conn, EVENTS_CONSUMER, [event_message_id(event)]):
            receipt.duplicate = True
            return receipt, []
        body = event_body(event)
        now = utcnow()
        seq = await events.insert(conn, body, _attributes(event), via=via, received_at=now)
        if seq is None:  # recorded before the inbox was told (a copy older than its memory)
            receipt.duplicate = True
            return receipt, []
        receipt.seq = seq
        pending = await self._start_triggered(conn, event, body, receipt)
        pending += await self._reach_waits(conn, event, body, seq, receipt)
        await events.count(
            conn,
            seq,
            started=len(receipt.started),
            reached=len(receipt.reached),
            problems=receipt.problems,
        )
        return receipt, pending

    async def _start_triggered(
        self, conn: AsyncConnection, event: CloudEvent, body: dict[str, Any], receipt: Receipt
    ) -> list[PendingRow]:
        pending: list[PendingRow] = []
        for saga, trigger in self.routes.triggers(event.type):
            if trigger.when is not None and not trigger.when.holds(body):
                continue
            data = (
                body["data"]
                if trigger.input_map is None
                else map_input(body, trigger.input_map, EVENT_ROOTS)
            )
            try:
                self.inputs.check(saga, data)
            except InputInvalid as exc:
                receipt.problems.append(
                    f"trigger of saga {saga.name!r}: {exc}: {'; '.join(exc.errors)}"
                )
                continue
            key = None if trigger.key is None else resolve(body, trigger.key, EVENT_ROOTS)
            instance_id = triggered_instance_id(saga.name, event)
            try:
                _, written = await start(
                    conn,
                    self.topology,
                    saga,
                    instance_id,
                    data,
                    instances.NewInstance(
                        correlation_key=None if key in (None, MISSING) else _text(key),
                        traceparent=tracing.current_traceparent(fallback=event.traceparent),
                    ),
                    definitions=self.definitions,
                )
            except instances.AlreadyStarted:
                continue  # this event started it before
            receipt.started.append(instance_id)
            pending += written
        return pending

    async def _reach_waits(
        self,
        conn: AsyncConnection,
        event: CloudEvent,
        body: dict[str, Any],
        seq: int,
        receipt: Receipt,
    ) -> list[PendingRow]:
        candidates = await events.matching_waits(conn, body)
        if not candidates:
            return []
        # Lock the instances, then match again: their waits cannot change any more.
        locked = sorted({instance_id for instance_id, _ in candidates})
        await instances.load_many(conn, locked)
        incoming: list[Incoming] = []
        now = utcnow()
        for instance_id, key in await events.matching_waits(conn, body, locked):
            if any(instance_id == reached for reached, _ in receipt.reached):
                continue  # one event reaches an instance once: its oldest wait takes it
            if await events.deliver(conn, seq, instance_id, key, now):
                receipt.reached.append((instance_id, key))
                incoming.append(
                    Incoming(
                        instance_id,
                        EventReceived(wait=key, received=body),
                        traceparent=event.traceparent,
                    )
                )
        if not incoming:
            return []
        _, pending = await apply_events(conn, self.definitions, self.topology, incoming)
        return pending

    # ---- the orchestrators' upkeep ----------------------------------------------------------

    async def sweep(self, retention_seconds: float, *, limit: int = 100) -> int:
        """Deliver the kept events that missed a wait under way; forget the events older than
        the retention. Returns how many events were delivered."""
        async with transaction(self.engine) as conn:
            await events.expire(conn, utcnow() - timedelta(seconds=retention_seconds))
            missed = await events.left_behind(conn, limit)
            if not missed:
                return 0
            await instances.load_many(conn, sorted({instance_id for instance_id, _, _ in missed}))
            incoming: list[Incoming] = []
            now = utcnow()
            for instance_id, key, kept in missed:
                if await events.deliver(conn, kept.seq, instance_id, key, now):
                    await events.count(conn, kept.seq, started=0, reached=1, problems=[])
                    incoming.append(
                        Incoming(instance_id, EventReceived(wait=key, received=kept.body))
                    )
            _, pending = await apply_events(conn, self.definitions, self.topology, incoming)
        await self.relay.publish_committed(pending)
        if incoming:
            log.info("delivered %d kept events to waits that had missed them", len(incoming))
        return len(incoming)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()
