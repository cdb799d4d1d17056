"""The benchmark's event source, for workloads whose instances wait for an event (issue 14).

It publishes each instance's event as another service would: CloudEvents binary mode
(`cloudevents.to_amqp`), persistent, to the events exchange with the type as routing key, each
confirmed by the broker. The workload says whether instance n's event goes out before the
instance starts (Warren keeps it until the wait takes it) or once its wait has begun (seen in
`warren.waits`, polled). It also binds a queue of its own to the event types the saga emits, to
read back what Warren published.

Publishing needs the orchestrators' events queue bound to the awaited types: they bind it at
startup to the types the registered definitions listen to (the stack registers the definition
before it starts them, and `Stack.wait_ready` waits until they consume that queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aio_pika
import asyncpg

from bench.runner import log, summary_ms
from orchestrator.definitions import Saga
from orchestrator.messaging.cloudevents import to_amqp

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

    from bench.runner import Stack
    from orchestrator.messaging.cloudevents import CloudEvent

_WAITING = """
SELECT value #>> '{}' AS value FROM warren.waits
WHERE event_type = ANY($1::text[]) AND value #>> '{}' = ANY($2::text[])"""

_DELIVERIES = """
SELECT d.instance_id::text AS instance_id, d.delivered_at, e.received_at,
       w.recorded_at AS wait_began
FROM warren.event_deliveries d
JOIN warren.events e ON e.seq = d.event_seq
JOIN warren.history w
  ON w.instance_id = d.instance_id AND w.type = 'wait_started' AND w.step = d.wait_key
WHERE d.instance_id = ANY($1::uuid[])"""

_EMITTED = """
SELECT count(*) FROM warren.history
WHERE instance_id = ANY($1::uuid[]) AND type = 'event_emitted'"""


class EventFeed:
    """Publishes the events a stack's workload waits for; `figures` says what became of them."""

    def __init__(self, stack: Stack) -> None:
        workload = stack.workload
        if workload.awaited_event is None or workload.event_first is None:
            raise ValueError(f"workload {workload.name} waits for no event")
        self.awaited_event = workload.awaited_event
        self.event_first = workload.event_first
        self.stack = stack
        saga = getattr(importlib.import_module(workload.module), workload.saga_attr)
        assert isinstance(saga, Saga)
        self.emitted_types = sorted({emit.type for emit in saga.emits})
        self.sent: dict[int, datetime] = {}
        """n -> when its event was handed to the broker (UTC, this machine's clock)."""
        self._late: dict[str, tuple[int, CloudEvent]] = {}
        """correlation value -> (n, event): published once that wait has begun."""
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._emitted: AbstractQueue | None = None
        self._db: asyncpg.Connection | None = None

    async def open(self) -> None:
        topology = self.stack.settings.topology
        self._connection = await aio_pika.connect(self.stack.amqp_url)
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self._channel.get_exchange(topology.events_exchange)
        self._emitted = await self._channel.declare_queue("bench.emitted", exclusive=True)
        for event_type in self.emitted_types:
            await self._emitted.bind(self._exchange, routing_key=event_type)
        self._db = await asyncpg.connect(self.stack.database_url.replace("+asyncpg", ""))

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
        if self._connection is not None:
            await self._connection.close()

    # ---- publishing ------------------------------------------------------------------------

    async def before_start(self, n: int) -> None:
        """Publish instance n's event now, or note it for when its wait begins."""
        value, event = self.awaited_event(n)
        if self.event_first(n):
            await self._publish(n, event)
        else:
            self._late[value] = (n, event)

    async def publish_waiting(self) -> int:
        """Publish the events of the noted instances whose wait has begun; how many."""
        if not self._late:
            return 0
        assert self._db is not None
        types = sorted({event.type for _, event in self._late.values()})
        rows = await self._db.fetch(_WAITING, types, list(self._late))
        for row in rows:
            noted = self._late.pop(row["value"], None)
            if noted is not None:
                await self._publish(*noted)
        return len(rows)

    async def watch(self, stop: asyncio.Event, interval: float = 0.02) -> None:
        """`publish_waiting` every `interval` until `stop` is set (concurrent mode)."""
        while not stop.is_set():
            await self.publish_waiting()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def publish_when_waiting(self, n: int, limit: float) -> None:
        """Sequential mode: once instance n waits (polled every ms), publish its event."""
        value, _ = self.awaited_event(n)
        deadline = time.perf_counter() + limit
        while value in self._late:
            if await self.publish_waiting() == 0:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"instance {n} did not begin its wait within {limit}s")
                await asyncio.sleep(0.001)

    async def _publish(self, n: int, event: CloudEvent) -> None:
        assert self._exchange is not None
        body, headers = to_amqp(event)
        message = aio_pika.Message(
            body,
            headers=headers,
            content_type=headers["content-type"],
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.id,
        )
        self.sent[n] = datetime.now(UTC)
        await self._exchange.publish(message, routing_key=event.type)

    # ---- figures ---------------------------------------------------------------------------

    async def read_back(
        self, ids: list[str], expected: int, limit: float = 10.0
    ) -> tuple[int, int]:
        """The events the instances `ids` published that reached the read-back queue (by their
        `ce-correlationid`): (distinct `ce-id`s, copies). Waits up to `limit` for `expected`
        distinct ones, since an instance is terminal in the database before its events are
        confirmed. Takes every message off the queue. A copy is the outbox's at-least-once:
        the sweeper publishes again a row whose deletion lagged past its grace period."""
        assert self._emitted is not None
        wanted = set(ids)
        seen: set[str] = set()
        copies = 0
        deadline = time.perf_counter() + limit
        while True:
            message = await self._emitted.get(no_ack=True, fail=False)
            if message is not None:
                if message.headers.get("ce-correlationid") in wanted:
                    event_id = str(message.headers.get("ce-id"))
                    copies += event_id in seen
                    seen.add(event_id)
            elif len(seen) >= expected or time.perf_counter() > deadline:
                return len(seen), copies
            else:
                await asyncio.sleep(0.1)

    async def figures(self, db: asyncpg.Connection, ids: list[str], offset: int) -> dict[str, Any]:
        """What became of the events of instances `ids` (instance k is n = offset + k)."""
        rows = await db.fetch(_DELIVERIES, ids)
        n_of = {instance_id: offset + k for k, instance_id in enumerate(ids)}
        kept = [r for r in rows if r["received_at"] < r["wait_began"]]
        late = [
            (r["delivered_at"] - self.sent[n]).total_seconds()
            for r in rows
            if not self.event_first(n := n_of[r["instance_id"]]) and n in self.sent
        ]
        delivered = [r["delivered_at"] for r in rows]
        span = (max(delivered) - min(delivered)).total_seconds() if len(delivered) > 1 else 0.0
        emitted = int(await db.fetchval(_EMITTED, ids))
        read_back, copies = await self.read_back(ids, emitted)
        if read_back != emitted:
            log(f"events: {emitted} emitted but {read_back} read back from the broker")
        return {
            "published": sum(1 for k in range(len(ids)) if offset + k in self.sent),
            "applied": len(rows),
            "arrived_before_wait": len(kept),
            "applied_per_second": round(len(rows) / span, 1) if span else None,
            "published_to_applied": summary_ms(late),
            "emitted": emitted,
            "emitted_read_back": read_back,
            "emitted_copies": copies,
        }
