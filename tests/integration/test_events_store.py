"""The events store on the real database: a kept event found by its correlation value (the
index's containment and the path agree), and the sweep's look for a wait and an event that
missed each other, bounded to the window in which they can have."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from orchestrator.engine import Subscription
from orchestrator.messaging.envelope import utcnow
from orchestrator.persistence import events
from orchestrator.storage.database import transaction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


def _body(event_id: str, data: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "source": "s",
        "type": "t.x",
        "subject": None,
        "time": None,
        "data": data,
    }


async def test_a_kept_event_is_found_by_its_correlation_value(engine: AsyncEngine) -> None:
    instance_id = uuid.uuid4()
    async with transaction(engine) as conn:
        now = utcnow()
        for event_id, data in (
            ("e1", {"order_id": "B", "lines": [{"sku": "x"}]}),
            ("e2", {"order_id": "A", "lines": [{"sku": "y"}, {"sku": "z"}]}),
        ):
            await events.insert(conn, _body(event_id, data), {}, via="api", received_at=now)
        by_order = Subscription(key="w", event_type="t.x", path="data.order_id", value="A")
        found = await events.kept_event(conn, instance_id, by_order)
        assert found is not None
        assert found.body["id"] == "e2"
        by_line = Subscription(key="w", event_type="t.x", path="data.lines[1].sku", value="z")
        found = await events.kept_event(conn, instance_id, by_line)
        assert found is not None
        assert found.body["id"] == "e2"
        nowhere = Subscription(key="w", event_type="t.x", path="data.lines[0].sku", value="z")
        assert await events.kept_event(conn, instance_id, nowhere) is None
        anything = Subscription(key="w", event_type="t.x", path=None)
        found = await events.kept_event(conn, instance_id, anything)
        assert found is not None
        assert await events.deliver(conn, found.seq, instance_id, "w", now)
        again = await events.kept_event(conn, instance_id, anything)
        assert again is not None
        assert again.seq != found.seq  # each event reaches an instance once


async def test_the_sweep_finds_a_wait_and_an_event_that_missed_each_other(
    engine: AsyncEngine,
) -> None:
    recent, old = uuid.uuid4(), uuid.uuid4()
    async with transaction(engine) as conn:
        now = utcnow()
        seq = await events.insert(conn, _body("m1", {"k": 1}), {}, via="broker", received_at=now)
        sub = Subscription(key="w", event_type="t.x", path="data.k", value=1)
        long_ago = now - 2 * events.RACE_WINDOW
        await events.open_waits(conn, [(recent, sub, now), (old, sub, long_ago)])
        missed = await events.left_behind(conn, 10)
        assert [(i, key, kept.seq) for i, key, kept in missed] == [(recent, "w", seq)]
        assert seq is not None
        await events.deliver(conn, seq, recent, "w", now + timedelta(seconds=1))
        assert await events.left_behind(conn, 10) == []
