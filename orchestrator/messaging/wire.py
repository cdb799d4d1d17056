"""The broker connection's socket writes, gathered: every frame written in one turn of the
event loop leaves in one system call.

aiormq writes each frame (a publish, an ack) to the socket as soon as its writer task takes it
from its queue, so a batch of 128 replies cost 128 `send` calls on this side and as many reads
on the broker's. The frames are queued within one loop turn anyway; sending them together at
the end of it changes no order and delays none by more than that turn. It plugs in through
aiormq's own extension point, the transport factory (docs/performance.md, round five).

The publishes do not wait for their frame to be written (`Broker` waits for the broker's
confirm instead), so nothing else bounds what waits to be sent when the broker stops reading
(a memory alarm blocks publishers): `unsent_bytes` lets the broker refuse to add to it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory

if TYPE_CHECKING:
    from yarl import URL


class GatheringTransportFactory(TransportFactory):
    """aiormq's TCP (or TLS, for amqps://) connection, with a `GatheringWriter`."""

    def __init__(self) -> None:
        self.writer: GatheringWriter | None = None
        """The latest connection's (a robust connection makes a new one each time)."""

    def unsent_bytes(self) -> int:
        return 0 if self.writer is None else self.writer.unsent_bytes()

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        inner = TLSTransportFactory() if url.scheme == "amqps" else TCPTransportFactory()
        reader, writer = await inner.create(url, **kwargs)
        self.writer = GatheringWriter(writer)
        return reader, cast("asyncio.StreamWriter", self.writer)


class GatheringWriter:
    """A stream writer whose writes wait for the end of the loop turn, then leave as one.

    Everything that must see the bytes on the socket (drain, close, EOF) sends the pending
    ones first, so flow control and shutdown behave as on the plain writer."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        if not self._writer.is_closing():
            self._writer.write(data)

    def unsent_bytes(self) -> int:
        """Written, and not yet taken by the kernel."""
        pending = sum(len(data) for data in self._pending)
        return pending + self._writer.transport.get_write_buffer_size()

    async def drain(self) -> None:
        self.flush()
        await self._writer.drain()

    def write_eof(self) -> None:
        self.flush()
        self._writer.write_eof()

    def close(self) -> None:
        self.flush()
        self._writer.close()

    def __getattr__(self, name: str) -> Any:
        # The rest (is_closing, can_write_eof, wait_closed, transport, get_extra_info) is the
        # plain writer's.
        return getattr(self._writer, name)
