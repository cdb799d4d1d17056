"""The broker connection's gathered writes: the frames of one loop turn leave in one write, in
order; whatever must see them on the socket (drain, close) sends them first."""

from __future__ import annotations

import asyncio
from typing import Any

from orchestrator.messaging.wire import GatheringWriter


class _Transport:
    def __init__(self) -> None:
        self.buffered = 0

    def get_write_buffer_size(self) -> int:
        return self.buffered


class _RecordingWriter:
    """The plain writer's calls, recorded."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.drained = 0
        self.closed = False
        self.transport = _Transport()

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    async def drain(self) -> None:
        self.drained += 1

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True


def _gathering(inner: _RecordingWriter) -> Any:
    return GatheringWriter(inner)  # type: ignore[arg-type]


async def test_the_frames_of_one_loop_turn_leave_in_one_write_in_order() -> None:
    inner = _RecordingWriter()
    writer = _gathering(inner)
    for frame in (b"publish-1;", b"publish-2;", b"ack;"):
        writer.write(frame)
    assert inner.writes == []  # not before the turn ends
    assert writer.unsent_bytes() == len(b"publish-1;publish-2;ack;")

    await asyncio.sleep(0)
    assert inner.writes == [b"publish-1;publish-2;ack;"]
    assert writer.unsent_bytes() == 0

    writer.write(b"next-turn;")
    await asyncio.sleep(0)
    assert inner.writes[1:] == [b"next-turn;"]


async def test_drain_and_close_send_what_waits_first() -> None:
    inner = _RecordingWriter()
    writer = _gathering(inner)
    writer.write(b"a;")
    await writer.drain()
    assert (inner.writes, inner.drained) == ([b"a;"], 1)

    writer.write(b"close-frame;")
    writer.close()
    assert inner.writes[1:] == [b"close-frame;"]
    assert inner.closed
    await asyncio.sleep(0)  # the flush scheduled by the write finds nothing left to send
    assert len(inner.writes) == 2


async def test_unsent_bytes_count_the_transports_buffer_too() -> None:
    inner = _RecordingWriter()
    inner.transport.buffered = 4096  # the kernel took no more: the broker is not reading
    writer = _gathering(inner)
    writer.write(b"x" * 10)
    assert writer.unsent_bytes() == 4106
    assert writer.can_write_eof()  # the rest is the plain writer's


async def test_a_real_socket_receives_the_frames_in_order() -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await received.put(await reader.read())  # until EOF
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, plain = await asyncio.open_connection("127.0.0.1", port)
        writer = GatheringWriter(plain)
        for index in range(100):
            writer.write(b"%d;" % index)
        writer.write_eof()
        async with asyncio.timeout(30):
            data = await received.get()
        assert data == b"".join(b"%d;" % index for index in range(100))
        writer.close()
        await plain.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
