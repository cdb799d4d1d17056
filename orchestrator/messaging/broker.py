"""The broker edge: one robust aio-pika connection, confirmed mandatory publishes, and
translation of aio-pika errors into `BrokerError`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
from aio_pika import DeliveryMode, Message
from aio_pika.connection import make_url
from aio_pika.exceptions import (
    AMQPChannelError,
    AMQPError,
    DeliveryError,
    InvalidFrameError,
    ProbableAuthenticationError,
    PublishError,
)
from pamqp.commands import Basic
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from orchestrator.errors import BrokerError, UnroutableMessage
from orchestrator.messaging.envelope import CONTENT_TYPE
from orchestrator.messaging.wire import GatheringTransportFactory
from orchestrator.observability import metrics
from orchestrator.patience import STARTUP_PATIENCE_SECONDS, patiently

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection
    from uuid import UUID

    from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

    from orchestrator.messaging.topology import Topology

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_SECONDS = 10.0
SETUP_PATIENCE_SECONDS = 60.0
"""How long a process keeps setting up (channels, declarations, subscriptions) through a
connection that is lost or being restored, before it gives up."""
REOPEN_PAUSE_SECONDS = 1.0
"""After a failed try to open a fresh publisher channel, the publishes that fail meanwhile do
not try again (an outage fails thousands of them, and each would try, and log)."""
REOPEN_WARN_EVERY_SECONDS = 30.0
MAX_UNSENT_BYTES = 16 * 1024 * 1024
"""Publishes are refused (their rows stay in the outbox) while this much waits to be sent:
the broker is not reading, a memory or disk alarm blocks publishers (`wire`)."""
FRAME_QUEUE = 1024
"""Frames an aiormq connection queues for its writer task (aiormq's default is 10). A batch's
publishes are put in one loop turn; with a short queue they went through it one loop turn,
and one lock hand-over, at a time."""

PERSISTENT = int(DeliveryMode.PERSISTENT)

T = TypeVar("T")


class Broker:
    """A connection to RabbitMQ for one process: a confirmed publisher channel plus consumers."""

    def __init__(self, url: str, topology: Topology) -> None:
        self.url = url
        self.topology = topology
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._declared: set[tuple[str, str]] = set()
        self._reopening = asyncio.Lock()
        self._reopen_failed_at = float("-inf")
        """Monotonic time of the last failed try to open a fresh publisher channel."""
        self._reopen_failing_since = float("-inf")
        self._reopen_warned_at = float("-inf")
        self._wire = GatheringTransportFactory()

    async def connect(self, *, patience_seconds: float = STARTUP_PATIENCE_SECONDS) -> None:
        """Connect, waiting up to `patience_seconds` for a broker that is still starting.
        After that the connection is robust: aio-pika reconnects and restores channels.

        A refusal that waiting cannot cure (wrong credentials, a vhost the user may not open)
        fails at once; every failure says, in one line, which setting to check."""

        def waiting(exc: BaseException) -> None:
            log.warning(
                "RabbitMQ at %s does not answer yet (%r); trying again for up to %g s",
                _redact(self.url),
                exc,
                patience_seconds,
            )

        try:
            self._connection = await patiently(
                self._open_connection,
                worth_waiting=_worth_waiting_for,
                on_first_failure=waiting,
                seconds=patience_seconds,
            )
        except (AMQPError, OSError) as exc:
            raise BrokerError(_connect_failure(self.url, exc, patience_seconds)) from exc
        try:
            self.connection.close_callbacks.add(_disconnected)
            self.connection.reconnect_callbacks.add(_reconnected)
            metrics.broker_connected.set(1)
            await self.setting_up(self._open_publisher)
        except (AMQPError, OSError, RuntimeError) as exc:
            raise BrokerError(
                f"cannot declare Warren's exchanges on RabbitMQ at {_redact(self.url)}: {exc}; "
                "check the user's permissions on the vhost of WARREN_AMQP_URL"
            ) from exc

    async def _open_connection(self) -> AbstractRobustConnection:
        """One try. A try that failed is closed here: left to the garbage collector, its
        reconnection machinery would warn of a close that was never awaited."""
        # A class setting of aiormq's, read when a connection is made: the process's own.
        aiormq.Connection.FRAME_BUFFER_SIZE = max(aiormq.Connection.FRAME_BUFFER_SIZE, FRAME_QUEUE)
        connection = aio_pika.RobustConnection(make_url(self.url))
        # aio-pika hands its `kwargs` to aiormq on every (re)connection.
        connection.kwargs["transport_factory"] = self._wire
        try:
            await connection.connect(timeout=PUBLISH_TIMEOUT_SECONDS)
        except BaseException:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                    await connection.close()
            raise
        return connection

    async def _open_publisher(self) -> None:
        stale, self._publisher = self._publisher, None
        await close_quietly(stale)
        self._publisher = await self.connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        await self.topology.declare_base(self._publisher)

    async def setting_up(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run one set-up step (open a channel, declare, subscribe), again and again while the
        connection is lost or being restored, for up to SETUP_PATIENCE_SECONDS: a reset while a
        process starts (or restarts a consumer) must not stop it. Refusals (no access, a queue
        declared with other arguments) are not waited for. `step` must undo its own half-done
        work before it tries again."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_connection_lost),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            stop=stop_after_delay(SETUP_PATIENCE_SECONDS),
            before_sleep=lambda state: log.warning(
                "broker connection lost while setting up (%r); trying again",
                state.outcome.exception() if state.outcome else None,
            ),
            reraise=True,
        ):
            with attempt:
                async with asyncio.timeout(SETUP_PATIENCE_SECONDS):
                    await self.connection.connected.wait()
                async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                    return await step()
        raise AssertionError("unreachable: tenacity reraises the last error")

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise BrokerError("broker is not connected; call connect() first")
        return self._connection

    async def channel(self, *, prefetch: int) -> AbstractChannel:
        """A consumer channel with bounded prefetch. Errors are the driver's own (for
        `setting_up` to judge); callers outside it translate them."""
        channel = await self.connection.channel()
        try:
            await channel.set_qos(prefetch_count=prefetch)
        except BaseException:
            await close_quietly(channel)
            raise
        return channel

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: UUID,
        headers: dict[str, Any] | None = None,
        content_type: str = CONTENT_TYPE,
    ) -> None:
        """Publish persistently and wait for the broker's confirm. Mandatory: an unroutable
        command or reply makes us declare its queue once and try again.

        Not so events: the events exchange is publish/subscribe, and an event no queue is
        bound for is one nobody listens to. It is confirmed (the broker took it) and dropped."""
        message = _Outgoing(body, message_id, headers, content_type)
        try:
            await self._publish_confirmed(exchange, routing_key, message)
        except UnroutableMessage:
            # Nobody has declared the destination queue yet: declare it (idempotent) so the
            # message waits there for its consumers, and publish again. Once per destination.
            destination = (exchange, routing_key)
            if destination in self._declared:
                raise
            channel = self._publisher_channel()
            if exchange == self.topology.commands_exchange:
                await self.topology.declare_pool(channel, routing_key)
            elif exchange == self.topology.replies_exchange:
                await self.topology.declare_orchestrator(channel)
            else:
                raise
            self._declared.add(destination)
            await self._publish_confirmed(exchange, routing_key, message)

    async def publish_dead_letter(
        self, body: bytes, *, message_id: str | None, headers: dict[str, Any]
    ) -> None:
        """Park a message in the dead-letter queue (the fanout exchange routes it there)."""
        message = Message(
            body,
            message_id=message_id,
            delivery_mode=DeliveryMode.PERSISTENT,
            headers=headers,
        )
        channel = self._publisher
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                exchange = await self._exchange(self.topology.dead_letter_exchange)
                await exchange.publish(message, "", mandatory=True)
        except (TimeoutError, RuntimeError) as exc:  # ChannelInvalidStateError is one too
            await self._reopen_publisher(channel)
            raise BrokerError(f"could not dead-letter message {message_id}: {exc!r}") from exc
        except (AMQPError, aiormq.exceptions.AMQPError, OSError) as exc:
            raise BrokerError(f"could not dead-letter message {message_id}: {exc!r}") from exc

    async def _publish_confirmed(
        self, exchange_name: str, routing_key: str, outgoing: _Outgoing
    ) -> None:
        # Straight to aiormq's channel, without waiting for the frame to be written: aio-pika's
        # `Exchange.publish` holds the channel's lock until the writer task has sent and
        # drained each frame, so a batch's publishes went to the socket one loop turn, and one
        # system call, at a time. The broker's confirm, awaited below, says more than the
        # drain did (docs/performance.md, round five).
        properties = Basic.Properties(
            message_id=str(outgoing.message_id),
            content_type=outgoing.content_type,
            delivery_mode=PERSISTENT,
            headers=outgoing.headers or {},
        )
        mandatory = exchange_name != self.topology.events_exchange
        if self._wire.unsent_bytes() > MAX_UNSENT_BYTES:
            raise BrokerError(
                f"publish to {exchange_name!r} refused: RabbitMQ is not reading what was "
                "published already (is a memory or disk alarm blocking publishers?)"
            )
        channel = self._publisher
        try:
            # The whole publish is bounded, waiting for a reconnecting channel included.
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                underlay = cast(
                    "aiormq.Channel", await self._publisher_channel().get_underlay_channel()
                )
                confirmation = await underlay.basic_publish(
                    outgoing.body,
                    exchange=exchange_name,
                    routing_key=routing_key,
                    properties=properties,
                    mandatory=mandatory,
                    wait=False,
                )
        except (DeliveryError, PublishError) as exc:
            raise UnroutableMessage(
                f"no queue for routing key {routing_key!r} on exchange {exchange_name!r}"
            ) from exc
        except (TimeoutError, RuntimeError) as exc:
            # Timed out, or the channel or connection is closed and not (yet) restored
            # (aio-pika and aiormq say so with RuntimeErrors, ChannelInvalidStateError among
            # them).
            await self._reopen_publisher(channel)
            raise BrokerError(f"publish to {exchange_name!r} failed: {exc!r}") from exc
        except (AMQPError, aiormq.exceptions.AMQPError, OSError) as exc:
            raise BrokerError(f"publish to {exchange_name!r} failed: {exc!r}") from exc
        if not isinstance(confirmation, Basic.Ack):
            raise BrokerError(f"broker did not confirm the publish to {exchange_name!r}")

    async def _exchange(self, name: str) -> AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self._publisher_channel().get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def _reopen_publisher(self, stale: AbstractChannel | None) -> None:
        """A publish on `stale` timed out: that channel may never come back by itself (seen
        after broker restarts), so open a fresh one, if the connection lets us."""
        async with self._reopening:
            if self._publisher is not stale:
                return  # another publish replaced it already
            if time.monotonic() - self._reopen_failed_at < REOPEN_PAUSE_SECONDS:
                return  # failed a moment ago: the connection is down, let it recover first
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                    fresh = await self.connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
            except (
                TimeoutError,
                RuntimeError,
                AMQPError,
                aiormq.exceptions.AMQPError,
                OSError,
            ) as exc:
                # The connection is down too: aio-pika restores it, and its channels, by itself.
                self._reopen_failed(exc)
                return
            self._publisher = fresh
            self._exchanges.clear()
            log.warning("publisher channel replaced after a publish timed out")
            if stale is not None and not stale.is_closed:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                        await stale.close()

    def _reopen_failed(self, exc: BaseException) -> None:
        """One warning when the failures begin, then one every REOPEN_WARN_EVERY_SECONDS
        while they go on."""
        now = time.monotonic()
        if now - self._reopen_failed_at > REOPEN_WARN_EVERY_SECONDS:
            self._reopen_failing_since = now  # the first failure for a while: a new outage
        self._reopen_failed_at = now
        if now - self._reopen_warned_at >= REOPEN_WARN_EVERY_SECONDS:
            self._reopen_warned_at = now
            log.warning(
                "could not open a new publisher channel yet (failing for %.0f s; trying again "
                "at most once every %g s, and failed publishes are tried again later): %r",
                now - self._reopen_failing_since,
                REOPEN_PAUSE_SECONDS,
                exc,
            )

    async def bind_event_types(self, types: Collection[str]) -> None:
        """Route these event types to the orchestrators' events queue (idempotent)."""

        async def bind() -> None:
            channel = await self.connection.channel()
            try:
                await self.topology.bind_event_types(channel, types)
            finally:
                await close_quietly(channel)

        try:
            await self.setting_up(bind)
        except (AMQPError, aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            raise BrokerError(f"could not bind event types {sorted(types)}: {exc!r}") from exc

    async def ping(self) -> None:
        """Open and close a channel: `BrokerError` when RabbitMQ does not answer."""
        try:
            channel = await self.connection.channel()
            await channel.close()
        except (AMQPError, OSError) as exc:
            raise BrokerError(str(exc)) from exc

    async def queue_counts(self, queue: str) -> tuple[int | None, int | None]:
        """Ready messages and consumers of `queue` by a passive declare; (None, None) when it
        does not exist or the broker does not answer. A missing queue closes its channel, so
        each look gets a channel of its own."""
        try:
            channel = await self.connection.channel()
        except (AMQPError, OSError, BrokerError):
            return None, None
        try:
            declared = await channel.declare_queue(queue, passive=True)
            result = declared.declaration_result
            return result.message_count or 0, result.consumer_count or 0
        except (AMQPError, OSError):  # ChannelNotFoundEntity (no such queue) among them
            return None, None
        finally:
            if not channel.is_closed:
                await channel.close()

    def _publisher_channel(self) -> AbstractChannel:
        if self._publisher is None:
            raise BrokerError("broker is not connected; call connect() first")
        return self._publisher

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
            self._publisher = None
            self._exchanges.clear()


@dataclass(frozen=True, slots=True)
class _Outgoing:
    body: bytes
    message_id: UUID
    headers: dict[str, Any] | None
    content_type: str


def _worth_waiting_for(exc: BaseException) -> bool:
    """A broker still starting refuses connections; a refused login or vhost will not get
    better by waiting."""
    return (
        isinstance(exc, AMQPError | OSError)
        and not isinstance(exc, ProbableAuthenticationError)
        and not _vhost_refused(exc)
    )


def _vhost_refused(exc: BaseException) -> bool:
    # RabbitMQ answers Connection.Open on a vhost that does not exist, or that the user has no
    # permission on, with Connection.Close (NOT_ALLOWED); aiormq reports that as an invalid
    # frame and drops the reply text.
    return isinstance(exc, InvalidFrameError) and "Connection.Close" in str(exc)


def _connect_failure(url: str, exc: BaseException, patience_seconds: float) -> str:
    where, parsed = _redact(url), urlsplit(url)
    user = unquote(parsed.username or "guest")
    if isinstance(exc, ProbableAuthenticationError):
        return (
            f"RabbitMQ at {where} refused the login of user {user!r} (wrong user or "
            "password); check WARREN_AMQP_URL"
        )
    if _vhost_refused(exc):
        vhost = unquote(parsed.path[1:]) or "/"
        return (
            f"RabbitMQ at {where} refused user {user!r} access to vhost {vhost!r} (it does not "
            "exist, or the user has no permission on it); check the vhost at the end of "
            "WARREN_AMQP_URL"
        )
    return (
        f"cannot reach RabbitMQ at {where} within {patience_seconds:g} s ({exc or repr(exc)}); "
        "is it running? check WARREN_AMQP_URL"
    )


def _connection_lost(exc: BaseException) -> bool:
    """The connection dropped, was reset, timed out, or is being restored (aio-pika says so with
    RuntimeErrors, ChannelInvalidStateError among them): worth trying again. A channel-level
    refusal (access, missing entity, precondition) is an answer, not an outage."""
    if isinstance(exc, AMQPChannelError):
        return False
    return isinstance(exc, AMQPError | OSError | RuntimeError)  # TimeoutError is an OSError


async def close_quietly(channel: AbstractChannel | None) -> None:
    """Close what a failed set-up step left open, so that aio-pika does not restore it too."""
    if channel is None or channel.is_closed:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
            await channel.close()


def _redact(url: str) -> str:
    """Hide the password in a URL shown to people."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def _disconnected(*_: object) -> None:
    metrics.broker_connected.set(0)


def _reconnected(*_: object) -> None:
    metrics.broker_connected.set(1)
