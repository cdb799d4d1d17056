"""Sample pg_stat_activity of the bench's scratch databases every 100 ms for SECONDS and
write which statements were active (their first 70 characters), as a share of the samples.

    .venv/bin/python bench/results/2026-12-02-events/sample_activity.py SECONDS OUT
"""

from __future__ import annotations

import asyncio
import collections
import re
import sys
from pathlib import Path

import asyncpg

_ACTIVE = (
    "SELECT query FROM pg_stat_activity WHERE datname LIKE 'warren_bench_%' "
    "AND state = 'active' AND pid <> pg_backend_pid()"
)


async def main(seconds: float) -> str:
    db = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    tally: collections.Counter[str] = collections.Counter()
    samples = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        samples += 1
        for row in await db.fetch(_ACTIVE):
            tally[re.sub(r"\s+", " ", row["query"]).strip()[:70]] += 1
        await asyncio.sleep(0.1)
    await db.close()
    lines = [f"{samples} samples of active statements in warren_bench_* databases"]
    lines += [f"{n:6d} {100 * n / samples:6.1f}%  {q}" for q, n in tally.most_common(15)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    Path(sys.argv[2]).write_text(asyncio.run(main(float(sys.argv[1]))))
