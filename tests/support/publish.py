"""Messages published by hand, as a stray sender or a stale copy of a worker would send them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aio_pika

from orchestrator.messaging.envelope import encode
from orchestrator.messaging.topology import REPLY_ROUTING_KEY

if TYPE_CHECKING:
    from orchestrator.config import Settings
    from orchestrator.messaging.envelope import Reply


async def publish(
    amqp_url: str, exchange: str, routing_key: str, *messages: aio_pika.Message
) -> None:
    """Publish `messages` to `exchange` ("" for the default exchange) over a connection of their
    own, each confirmed by the broker before this returns."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange) if exchange else channel.default_exchange
        for message in messages:
            await target.publish(message, routing_key)


async def publish_replies(settings: Settings, *replies: Reply) -> None:
    """`replies` as a worker sends them: encoded, each under its own id, to the replies exchange."""
    messages = [aio_pika.Message(encode(reply), message_id=str(reply.id)) for reply in replies]
    await publish(
        settings.amqp_url, settings.topology.replies_exchange, REPLY_ROUTING_KEY, *messages
    )
