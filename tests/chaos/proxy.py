"""A TCP proxy of our own, in front of the private RabbitMQ and Postgres, that breaks the network.

Warren's processes connect to the proxy's port; the proxy forwards to the real server. Faults:

- `reset()`: every open connection is closed with a TCP RST (SO_LINGER 0), both ways;
- `blackhole(seconds)`: nothing is forwarded, in either direction, on open or new connections
  (new ones are accepted and held): a partition. When it ends the stalled bytes flow again
  (TCP would have retransmitted them) or, with `reset_after=True`, the connections are reset;
- `delay(seconds, latency)`: every chunk is held `latency` seconds before it is forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


class _Link:
    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.client = client
        self.server = server
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for _, writer in (self.client, self.server):
            _rst(writer)
        for task in self.tasks:
            task.cancel()


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultyProxy:
    def __init__(self, name: str, upstream_port: int, *, listen_port: int = 0) -> None:
        self.name = name
        self.upstream_port = upstream_port
        self.listen_port = listen_port
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._open = asyncio.Event()  # cleared while blackholed
        self._open.set()
        self._latency = 0.0
        self._heal_task: asyncio.Task[None] | None = None
        self.connections_accepted = 0

    @property
    def links(self) -> list[_Link]:
        return list(self._links)

    @property
    def port(self) -> int:
        return self.listen_port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.listen_port, reuse_address=True
        )
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.heal()
        if self._server is not None:
            self._server.close()
        self.reset()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)

    # ---- faults ---------------------------------------------------------------------------------

    def reset(self) -> int:
        links = list(self._links)
        for link in links:
            link.abort()
        self._links.clear()
        return len(links)

    def blackhole(self, seconds: float, *, reset_after: bool = False) -> None:
        self._open.clear()
        self._heal_later(seconds, reset=reset_after)

    def delay(self, seconds: float, latency: float) -> None:
        self._latency = latency
        self._heal_later(seconds, reset=False)

    def heal(self) -> None:
        if self._heal_task is not None:
            self._heal_task.cancel()
            self._heal_task = None
        self._latency = 0.0
        self._open.set()

    @property
    def faulty(self) -> bool:
        return not self._open.is_set() or self._latency > 0

    def _heal_later(self, seconds: float, *, reset: bool) -> None:
        if self._heal_task is not None:
            self._heal_task.cancel()

        async def later() -> None:
            await asyncio.sleep(seconds)
            if reset:
                self.reset()
            self._heal_task = None
            self.heal()

        self._heal_task = asyncio.create_task(later())

    # ---- forwarding -----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        await self._open.wait()
        try:
            upstream = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.upstream_port), timeout=10
            )
        except (OSError, TimeoutError):
            _rst(writer)
            return
        link = _Link((reader, writer), upstream)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pipe(reader, upstream[1], link)),
            asyncio.create_task(self._pipe(upstream[0], writer, link)),
        ]

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self._latency:
                    await asyncio.sleep(self._latency)
                await self._open.wait()
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        # One side closed: close both (half-closes are not worth modelling here).
        self._links.discard(link)
        for _, w in (link.client, link.server):
            with contextlib.suppress(Exception):
                w.close()
