"""Sample pg_stat_activity of the bench's scratch databases every 100 ms for `seconds`:
which statements are active (first 70 characters), as a share of samples."""
import asyncio, collections, sys, re

import asyncpg

async def main(seconds: float, out: str) -> None:
    db = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    tally: collections.Counter[str] = collections.Counter()
    samples = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        rows = await db.fetch(
            "SELECT query FROM pg_stat_activity WHERE datname LIKE 'warren_bench_%' "
            "AND state = 'active' AND pid <> pg_backend_pid()"
        )
        samples += 1
        for r in rows:
            tally[re.sub(r"\s+", " ", r["query"]).strip()[:70]] += 1
        await asyncio.sleep(0.1)
    with open(out, "w") as f:
        f.write(f"{samples} samples of active statements in warren_bench_* databases\n")
        for q, n in tally.most_common(15):
            f.write(f"{n:6d} {100 * n / samples:6.1f}%  {q}\n")

asyncio.run(main(float(sys.argv[1]), sys.argv[2]))
