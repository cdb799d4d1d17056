"""How fast `GET /v1/instances` stays with a million instances.

    .venv/bin/python -m bench.list_queries [--instances 1000000] [--runs 30]

Creates a scratch database on the local Postgres, migrates it, writes N instance rows with
generate_series (4 sagas, 5 statuses, a correlation key on 1 in 10, created over 30 days), then
times the list query behind each filter of the API (first page of 50 and a page deep in the
list via its cursor) and prints JSON: p50 and p99 in milliseconds and whether the plan used an
index. The scratch database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.runner import SERVERS
from orchestrator.persistence.instances import InstanceFilter, list_instances
from orchestrator.storage.database import create_engine
from orchestrator.storage.migrate import upgrade

FILL = """
INSERT INTO warren.instances (id, saga_name, saga_version, status, seq, state,
                              created_at, updated_at, correlation_key)
SELECT gen_random_uuid(),
       (ARRAY['order', 'refund', 'signup', 'transfer'])[1 + n % 4],
       1,
       (ARRAY['completed', 'completed', 'completed', 'compensated', 'running', 'failed'])
           [1 + (n / 7) % 6],
       4,
       '{}'::jsonb,
       $1::timestamptz - make_interval(secs => n * (2592000.0 / $2)),
       $1::timestamptz - make_interval(secs => n * (2592000.0 / $2)) + interval '2 seconds',
       CASE WHEN n % 10 = 0 THEN 'customer-' || (n / 10) % 50000 END
FROM generate_series(1, $2) AS n
"""


async def main(instances: int, runs: int) -> dict[str, Any]:
    name = f"warren_bench_{uuid.uuid4().hex[:8]}"
    await SERVERS.create_database(name)
    url = SERVERS.database_url(name)
    try:
        await asyncio.to_thread(upgrade, url)
        conn = await asyncpg.connect(url)
        started = time.perf_counter()
        now = datetime.now(UTC)
        await conn.execute(FILL, now, instances)
        await conn.execute("VACUUM ANALYZE warren.instances")
        fill_seconds = time.perf_counter() - started
        await conn.close()
        return {
            "machine": f"{platform.node()} {platform.machine()}",
            "instances": instances,
            "fill_seconds": round(fill_seconds, 1),
            "queries": await _time_queries(url, now, runs),
        }
    finally:
        await SERVERS.drop_database(name)


async def _time_queries(url: str, now: datetime, runs: int) -> dict[str, Any]:
    engine = create_engine(url, pool_size=1)
    cases = {
        "newest": InstanceFilter(),
        "saga": InstanceFilter(saga="order"),
        "status": InstanceFilter(status="failed"),
        "saga+status": InstanceFilter(saga="refund", status="running"),
        "correlation_key": InstanceFilter(correlation_key="customer-123"),
        "created_range": InstanceFilter(
            created_after=now - timedelta(days=10), created_before=now - timedelta(days=9)
        ),
        "updated_range+status": InstanceFilter(
            status="compensated", updated_after=now - timedelta(days=3)
        ),
    }
    figures: dict[str, Any] = {}
    try:
        async with engine.connect() as conn:
            for label, where in cases.items():
                _, deep_cursor = await list_instances(conn, where, limit=2000, cursor=None)
                for page, cursor in (("first_page", None), ("page_after_2000", deep_cursor)):
                    samples = []
                    for _ in range(runs):
                        t0 = time.perf_counter()
                        await list_instances(conn, where, limit=50, cursor=cursor)
                        samples.append((time.perf_counter() - t0) * 1000)
                    samples.sort()
                    figures[f"{label}/{page}"] = {
                        "p50_ms": round(statistics.median(samples), 2),
                        "p99_ms": round(
                            samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2
                        ),
                    }
    finally:
        await engine.dispose()
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.instances, args.runs)), indent=2))
