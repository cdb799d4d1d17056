"""The publisher channel's replacement while the connection is down: a try at most once per
pause, and one warning for a run of failures, not one per failed publish."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from orchestrator.messaging import broker as broker_module
from orchestrator.messaging.broker import Broker
from orchestrator.messaging.topology import Topology


class _DownConnection:
    """A connection that is down: every channel it is asked for fails."""

    def __init__(self) -> None:
        self.channels_asked = 0

    async def channel(self, **_: Any) -> None:
        self.channels_asked += 1
        raise ConnectionError("connection reset by peer")


async def test_a_down_connection_is_asked_for_a_channel_once_per_pause_and_warned_of_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Broker("amqp://guest:guest@127.0.0.1:1/", Topology(namespace="unit"))
    connection = _DownConnection()
    broker._connection = connection  # type: ignore[assignment]
    stale = object()
    broker._publisher = stale  # type: ignore[assignment]

    with caplog.at_level(logging.WARNING, logger=broker_module.__name__):
        for _ in range(500):  # an outage's failed publishes, each asking for a fresh channel
            await broker._reopen_publisher(stale)  # type: ignore[arg-type]
        assert connection.channels_asked == 1

        broker._reopen_failed_at -= broker_module.REOPEN_PAUSE_SECONDS  # the pause is over
        await broker._reopen_publisher(stale)  # type: ignore[arg-type]
        assert connection.channels_asked == 2

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "could not open a new publisher channel yet" in warnings[0]
    assert "connection reset by peer" in warnings[0]
    assert broker._publisher is stale  # nothing replaced it
