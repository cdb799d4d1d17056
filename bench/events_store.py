"""How the events store's two lookups scale with the events kept and the waits under way.

    python -m bench.events_store EVENTS WAITS

Makes a scratch database (migrated), fills it with EVENTS `payment.captured` events received
over the last EVENTS seconds and WAITS waits begun now that none of them satisfies, then times,
once each (statement preparation included), the sweep's look for a wait and an event that
missed each other, and a wait's look for a kept event (one that is there, and one that is
not). The database is dropped at the end. BENCH_ADMIN_URL names the server
(postgresql://postgres@127.0.0.1:5432/ by default).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import asyncpg
import msgspec

from orchestrator.engine import Subscription
from orchestrator.messaging.envelope import utcnow
from orchestrator.persistence import events
from orchestrator.storage.database import create_engine, transaction
from orchestrator.storage.migrate import upgrade

BASE = os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/")
_FILL_EVENTS = """
INSERT INTO warren.events (event_id, source, type, body, attributes, via, received_at)
SELECT 'e' || i, 's', 'payment.captured', b::jsonb, '{}'::jsonb, 'broker',
       $2::timestamptz - make_interval(secs => i::float8)
FROM unnest($1::text[]) WITH ORDINALITY AS x(b, i)"""
_FILL_WAITS = """
INSERT INTO warren.waits (instance_id, wait_key, event_type, path, value, began_at, parts,
                          contains)
SELECT gen_random_uuid(), 'payment', 'payment.captured', 'data.order_id', to_jsonb('W-' || i),
       $1, ARRAY['data', 'order_id'],
       jsonb_build_object('data', jsonb_build_object('order_id', 'W-' || i))
FROM generate_series(1, $2) AS i"""


async def measure(n_events: int, n_waits: int) -> str:
    name = f"warren_bench_store_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(BASE + "postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        await asyncio.to_thread(upgrade, BASE + name)
        raw = await asyncpg.connect(BASE + name)
        now = utcnow()
        bodies = [
            msgspec.json.encode(
                {
                    "id": f"e{i}",
                    "source": "s",
                    "type": "payment.captured",
                    "data": {"order_id": f"O-{i}", "amount": i},
                }
            ).decode()
            for i in range(n_events)
        ]
        await raw.execute(_FILL_EVENTS, bodies, now)
        await raw.execute(_FILL_WAITS, now, n_waits)
        await raw.execute("ANALYZE")
        await raw.close()
        engine = create_engine(BASE + name)
        try:
            async with transaction(engine) as conn:
                sweep = await _timed(events.left_behind(conn, 100))
                there = _subscription(f"O-{n_events // 2}")
                found = await _timed(events.kept_event(conn, uuid.uuid4(), there))
                none = await _timed(events.kept_event(conn, uuid.uuid4(), _subscription("none")))
        finally:
            await engine.dispose()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
    return (
        f"{n_events} events, {n_waits} waits: sweep {sweep:.1f} ms, "
        f"kept-event look {found:.1f} ms (none there: {none:.1f} ms)"
    )


def _subscription(order_id: str) -> Subscription:
    return Subscription(
        key="payment", event_type="payment.captured", path="data.order_id", value=order_id
    )


async def _timed(work: object) -> float:
    started = time.perf_counter()
    await work  # type: ignore[misc]
    return (time.perf_counter() - started) * 1000


if __name__ == "__main__":
    print(asyncio.run(measure(int(sys.argv[1]), int(sys.argv[2]))))
