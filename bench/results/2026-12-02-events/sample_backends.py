"""Every 100 ms for SECONDS: the distinct backends seen in the bench's scratch databases, and
how many of them were caught running asyncpg's type introspection query (`typeinfo_tree`).

    .venv/bin/python bench/results/2026-12-02-events/sample_backends.py SECONDS OUT
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg

_BACKENDS = (
    "SELECT pid, query FROM pg_stat_activity "
    "WHERE datname LIKE 'warren_bench_%' AND pid <> pg_backend_pid()"
)


async def main(seconds: float) -> str:
    db = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    seen: set[int] = set()
    introspecting: set[int] = set()
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        for row in await db.fetch(_BACKENDS):
            seen.add(row["pid"])
            if "typeinfo_tree" in (row["query"] or ""):
                introspecting.add(row["pid"])
        await asyncio.sleep(0.1)
    await db.close()
    return f"{len(seen)} distinct backends seen; {len(introspecting)} caught introspecting types\n"


if __name__ == "__main__":
    Path(sys.argv[2]).write_text(asyncio.run(main(float(sys.argv[1]))))
