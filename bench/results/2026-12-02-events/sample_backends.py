"""Every 100 ms for `seconds`: distinct backends seen in warren_bench_* databases, and how many
samples caught each of them running the type introspection query (asyncpg's typeinfo_tree)."""
import asyncio, sys
import asyncpg

async def main(seconds: float, out: str) -> None:
    db = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    pids: dict[int, str] = {}
    intro: set[int] = set()
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        for r in await db.fetch(
            "SELECT pid, client_port, query, backend_start FROM pg_stat_activity "
            "WHERE datname LIKE 'warren_bench_%' AND pid <> pg_backend_pid()"):
            pids[r["pid"]] = str(r["backend_start"])
            if "typeinfo_tree" in (r["query"] or ""):
                intro.add(r["pid"])
        await asyncio.sleep(0.1)
    with open(out, "w") as f:
        f.write(f"{len(pids)} distinct backends seen; {len(intro)} caught introspecting types\n")

asyncio.run(main(float(sys.argv[1]), sys.argv[2]))
