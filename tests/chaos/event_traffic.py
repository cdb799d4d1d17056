"""The chaos run's event traffic: orders placed by events, paid by events.

For each placed order the harness publishes an `order.placed` event (which starts the
`placed-order` saga, `tests/chaos/app.py`) and the order's `payment.captured` (which its wait
takes): the payment before the order, just after it (usually before the instance reaches its
wait) or seconds later (usually after). Each copy of an event goes to the broker directly (in
CloudEvents binary mode) or through `POST /v1/events`, and some events are sent two or three
times, as an at-least-once publisher would: the same source and id each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field

import aio_pika
import httpx
import msgspec

from orchestrator.messaging.cloudevents import CloudEvent, to_amqp
from orchestrator.service.events import triggered_instance_id
from tests.chaos.app import placed_order

SAGA = placed_order.name
SHOP = "chaos/shop"
PAYMENTS = "chaos/payments"
VIAS = ("broker", "api")
TIMINGS = ("first", "soon", "later")
"""When the payment is sent: before the order, right after it, or 3 to 8 s after it."""
FULFILLED = "order.fulfilled"
FULFILLED_QUEUE = "chaos.fulfilled"
"""The harness's own queue of the events the saga emits (read at the end of the run)."""
PUBLISH_SLOTS = 16
"""Publishes in flight at once (like the starts: bounded, so outages do not pile them up)."""


@dataclass(frozen=True)
class Send:
    at: float
    """Seconds after the order's turn came."""
    event: CloudEvent
    via: str


@dataclass
class PlacedOrder:
    """One order of the event traffic and what the harness sent for it."""

    order_id: str
    placed: CloudEvent
    captured: CloudEvent
    timing: str
    sends: list[Send]
    failures: list[str] = field(default_factory=list)
    """Copies never accepted by the broker or the API (a harness problem: reported)."""

    @property
    def instance_id(self) -> str:
        return str(triggered_instance_id(SAGA, self.placed))

    def copies(self, event: CloudEvent) -> int:
        return sum(1 for send in self.sends if send.event is event)


def draw(rng: random.Random, seed: int, n: int) -> PlacedOrder:
    """Order `n`'s events, copies, paths and timing."""
    order_id = f"placed-{seed}-{n}"
    amount = rng.randint(1, 500)
    placed = CloudEvent(
        id=f"{order_id}-placed",
        source=SHOP,
        type="order.placed",
        subject=order_id,
        data={"order_id": order_id, "amount": amount},
    )
    captured = CloudEvent(
        id=f"{order_id}-captured",
        source=PAYMENTS,
        type="payment.captured",
        data={"order_id": order_id, "amount": amount},
    )
    timing = rng.choice(TIMINGS)
    placed_at, captured_at = {
        "first": (rng.uniform(0.5, 3.0), 0.0),
        "soon": (0.0, rng.uniform(0.0, 0.3)),
        "later": (0.0, rng.uniform(3.0, 8.0)),
    }[timing]
    sends: list[Send] = []
    for event, at in ((placed, placed_at), (captured, captured_at)):
        copies = rng.choices([1, 2, 3], weights=[5, 3, 2])[0]
        # Later copies come any time in the next few seconds: before or after the first
        # one took effect, sometimes after the instance ended.
        times = [at, *(at + rng.uniform(0.0, 6.0) for _ in range(copies - 1))]
        sends += [Send(at=t, event=event, via=rng.choice(VIAS)) for t in times]
    sends.sort(key=lambda send: send.at)
    return PlacedOrder(order_id, placed, captured, timing, sends)


class Publisher:
    """Sends events as a service would: to the events exchange (one connection, replaced
    when it breaks) or to the API, each until accepted."""

    def __init__(self, amqp_url: str, exchange: str, http: httpx.AsyncClient) -> None:
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.http = http
        self.slots = asyncio.Semaphore(PUBLISH_SLOTS)
        self._lock = asyncio.Lock()
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def run(self, order: PlacedOrder, began: float) -> None:
        """Every send of `order`, each at its time after `began` (monotonic)."""
        for send in order.sends:
            delay = began + send.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            async with self.slots:
                problem = await self.send(send.event, send.via)
            if problem is not None:
                order.failures.append(
                    f"{send.event.type} {send.event.id} via {send.via}: {problem}"
                )

    async def send(self, event: CloudEvent, via: str, *, within: float = 120.0) -> str | None:
        """None once accepted; else why not (after `within` seconds of trying)."""
        deadline = time.monotonic() + within
        pause, last = 0.5, ""
        while time.monotonic() < deadline:
            try:
                if via == "broker":
                    await self._to_broker(event)
                    return None
                response = await self.http.post("/v1/events", json=_structured(event))
                if response.status_code in (200, 201):
                    return None
                last = f"{response.status_code} {response.text[:200]}"
                if response.status_code < 500:
                    return last  # refused: sending it again will not help
            except httpx.TransportError as exc:
                last = repr(exc)
            except Exception as exc:  # noqa: BLE001 - the broker is restarting: try again
                last = repr(exc)
                await self._drop()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
        return last

    async def _to_broker(self, event: CloudEvent) -> None:
        channel = await self._open()
        body, headers = to_amqp(event)
        message = aio_pika.Message(
            body,
            headers=headers,
            content_type=event.datacontenttype,
            message_id=event.id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        exchange = await channel.get_exchange(self.exchange, ensure=False)
        # Confirmed, and returned (an error) if no queue is bound to its type.
        await exchange.publish(message, event.type, mandatory=True, timeout=10)

    async def _open(self) -> aio_pika.abc.AbstractChannel:
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                await self._drop_unlocked()
                self._connection = await aio_pika.connect(self.amqp_url, timeout=10)
                self._channel = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
            return self._channel

    async def _drop(self) -> None:
        async with self._lock:
            await self._drop_unlocked()

    async def _drop_unlocked(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):  # it is broken: nothing to save
                await asyncio.wait_for(connection.close(), timeout=5)

    async def close(self) -> None:
        await self._drop()


def _structured(event: CloudEvent) -> dict[str, object]:
    """The event in CloudEvents' structured JSON form (unset attributes left out)."""
    return {k: v for k, v in msgspec.to_builtins(event).items() if v is not None}


async def bind_fulfilled_queue(amqp_url: str, exchange: str) -> None:
    """The harness's queue of `order.fulfilled` events (durable: it outlives broker restarts)."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(FULFILLED_QUEUE, durable=True)
        await queue.bind(exchange, routing_key=FULFILLED)


async def read_fulfilled(amqp_url: str) -> list[str]:
    """The ids (`ce-id`) of the events in the harness's queue, every copy, the queue emptied."""
    ids: list[str] = []
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(FULFILLED_QUEUE, durable=True)
        while (message := await queue.get(no_ack=True, fail=False, timeout=10)) is not None:
            ids.append(str((message.headers or {}).get("ce-id")))
    return ids
