"""Names and declarations of every exchange and queue. Declared idempotently by whoever needs them.

    {ns}.commands  (direct) --pool name-->  {ns}.pool.{pool}    (quorum, one per worker pool)
    {ns}.replies   (direct) --"reply"---->  {ns}.orchestrator   (quorum, shared by orchestrators)
    {ns}.events    (topic)  --event type-->  {ns}.orchestrator.events   (quorum, shared by
                                             orchestrators; bound to the types definitions name)
    {ns}.dead-letter (fanout) ----------->  {ns}.dead-letters   (quorum)

Work queues are quorum queues with an explicit delivery limit: a message that crashes its consumer
again and again is dead-lettered instead of redelivered forever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from aio_pika import ExchangeType

if TYPE_CHECKING:
    from collections.abc import Iterable

    from aio_pika.abc import AbstractChannel, AbstractQueue
    from aiormq.abc import FieldTable

REPLY_ROUTING_KEY = "reply"


class Topology(msgspec.Struct, frozen=True, kw_only=True):
    namespace: str = "warren"
    """Prefix of every name: lets several Warren installations (or test runs) share a vhost."""
    delivery_limit: int = 5
    """Deliveries of one message before RabbitMQ dead-letters it."""

    @property
    def commands_exchange(self) -> str:
        return f"{self.namespace}.commands"

    @property
    def replies_exchange(self) -> str:
        return f"{self.namespace}.replies"

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dead-letter"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.namespace}.dead-letters"

    @property
    def orchestrator_queue(self) -> str:
        return f"{self.namespace}.orchestrator"

    @property
    def events_queue(self) -> str:
        return f"{self.namespace}.orchestrator.events"

    def pool_queue(self, pool: str) -> str:
        return f"{self.namespace}.pool.{pool}"

    def _work_queue_arguments(self) -> FieldTable:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.dead_letter_exchange,
        }

    async def declare_base(self, channel: AbstractChannel) -> AbstractQueue:
        """Exchanges and the dead-letter queue; cheap and idempotent. Returns that queue."""
        await channel.declare_exchange(self.commands_exchange, ExchangeType.DIRECT, durable=True)
        await channel.declare_exchange(self.replies_exchange, ExchangeType.DIRECT, durable=True)
        await channel.declare_exchange(self.events_exchange, ExchangeType.TOPIC, durable=True)
        dlx = await channel.declare_exchange(
            self.dead_letter_exchange, ExchangeType.FANOUT, durable=True
        )
        dlq = await channel.declare_queue(
            self.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dlq.bind(dlx)
        return dlq

    async def declare_dead_letters(self, channel: AbstractChannel) -> AbstractQueue:
        # The queue object declare_queue returned: a robust channel restores the consumers of
        # the queues it declared after a reconnect, and only those (not get_queue's).
        return await self.declare_base(channel)

    async def declare_pool(self, channel: AbstractChannel, pool: str) -> AbstractQueue:
        await self.declare_base(channel)
        queue = await channel.declare_queue(
            self.pool_queue(pool), durable=True, arguments=self._work_queue_arguments()
        )
        await queue.bind(self.commands_exchange, routing_key=pool)
        return queue

    async def declare_orchestrator(self, channel: AbstractChannel) -> AbstractQueue:
        await self.declare_base(channel)
        queue = await channel.declare_queue(
            self.orchestrator_queue, durable=True, arguments=self._work_queue_arguments()
        )
        await queue.bind(self.replies_exchange, routing_key=REPLY_ROUTING_KEY)
        return queue

    async def declare_events(self, channel: AbstractChannel) -> AbstractQueue:
        """The orchestrators' events queue; `bind_event_types` says which types reach it.
        One orchestrator at a time consumes it (another takes over when it goes), so events
        are applied in the order they were received."""
        await self.declare_base(channel)
        arguments = {**self._work_queue_arguments(), "x-single-active-consumer": True}
        return await channel.declare_queue(self.events_queue, durable=True, arguments=arguments)

    async def bind_event_types(self, channel: AbstractChannel, types: Iterable[str]) -> None:
        """Route these event types to the events queue (binding again changes nothing)."""
        queue = await self.declare_events(channel)
        for event_type in sorted(types):
            await queue.bind(self.events_exchange, routing_key=event_type)
