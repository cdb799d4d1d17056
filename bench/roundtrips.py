"""Count the database round trips of one saga, statement by statement, from Postgres's own log.

    .venv/bin/python -m bench.roundtrips [--log /var/log/postgresql/postgresql-15-main.log]

Sets ``log_statement = 'all'`` on a scratch database only (ALTER DATABASE: needs a superuser and
a server log this process can read), runs the order-3 stack, warms it up, then runs one saga
that completes and one that compensates, each alone, and reads back every statement Warren's
processes sent for it. Statements are grouped into transactions per backend and each transaction
is named by what it does (the API's start, an orchestrator's reply, a worker's command, the relay's
publish after commit). Background loops (outbox sweepers, timers, breakers) are listed apart.
Every statement is one round trip (asyncpg waits for each; prepared statements are cached after
warm-up), except rows of one executemany (the history rows of one transition), which asyncpg
pipelines. Every connection checkout runs SQLAlchemy's pool_pre_ping: BEGIN, ';', ROLLBACK (three
round trips; the empty ';' is not logged). Broker round trips are not in the database log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import runner
from bench.order3 import SAGA_NAME
from bench.workloads import WORKLOADS

_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \w+ \[(?P<pid>\d+)\] (?P<who>\S*@\S*) "
    r"(?P<level>[A-Z]+):  (?P<text>.*)$"
)
_STATEMENT = re.compile(r"^(?:statement|execute [^:]*): (?P<sql>.*)$", re.DOTALL)


def _statements(text: str, database: str) -> list[tuple[int, str]]:
    """(backend pid, SQL) of every logged statement on `database`, in order."""
    found: list[tuple[int, str]] = []
    current: list[Any] | None = None
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            if current is not None and line.startswith("\t"):
                current[1] += "\n" + line.strip()
            continue
        current = None
        if not match.group("who").endswith("@" + database) or match.group("level") != "LOG":
            continue
        statement = _STATEMENT.match(match.group("text"))
        if statement is not None:
            current = [int(match.group("pid")), statement.group("sql")]
            found.append(current)  # type: ignore[arg-type]
    return [(pid, " ".join(sql.split())) for pid, sql in found]


def _label(sql: str) -> str:
    """A short name for a statement."""
    words = sql.rstrip(";").split()
    if not words:
        return "(empty: ping)"
    head = words[0].upper()
    if head in {"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"}:
        return head
    table = next((w for w in words if w.startswith("warren.")), "")
    if head == "SELECT" and "FOR UPDATE" in sql.upper():
        head = "SELECT…FOR UPDATE"
    return f"{head} {table}".strip()


def _kind(labels: list[str], sql: list[str]) -> str:
    """What a transaction did, from its statements."""
    text = " | ".join(sql)
    if labels == ["BEGIN", "ROLLBACK"]:
        return "pool_pre_ping (BEGIN; ';'; ROLLBACK: the ';' is not logged)"
    if "INSERT warren.instances" in labels:
        return "api: start"
    if "INSERT warren.inbox" in labels and "UPDATE warren.instances" in labels:
        return "orchestrator: reply"
    if "INSERT warren.inbox" in labels and "INSERT warren.step_results" in labels:
        return "worker: command"
    if "DELETE warren.outbox" in labels and "created_at <" not in text:
        return "relay: publish after commit"
    return "background (sweeper / timers / breakers)"


def _transactions(statements: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """Group each backend's statements into transactions (a ping before BEGIN joins it)."""
    open_by_pid: dict[int, list[str]] = {}
    done: list[tuple[int, list[str]]] = []
    for pid, sql in statements:
        current = open_by_pid.setdefault(pid, [])
        current.append(sql)
        if sql.rstrip(";").upper() in {"COMMIT", "ROLLBACK"}:
            done.append((pid, current))
            open_by_pid[pid] = []
    done += [(pid, sqls) for pid, sqls in open_by_pid.items() if sqls]
    return done


def analyse(statements: list[tuple[int, str]]) -> dict[str, Any]:
    per_kind: dict[str, Counter[str]] = {}
    transactions: Counter[str] = Counter()
    shapes: dict[str, list[str]] = {}
    for _pid, sqls in _transactions(statements):
        labels = [_label(s) for s in sqls]
        kind = _kind(labels, sqls)
        transactions[kind] += 1
        per_kind.setdefault(kind, Counter()).update({"statements": len(sqls)})
        shapes.setdefault(kind, labels)
    return {
        "transactions": dict(transactions),
        "statements": {k: v["statements"] for k, v in per_kind.items()},
        "example_transaction": shapes,
    }


def _size(path: Path) -> int:
    return path.stat().st_size


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


async def _one(
    stack: runner.Stack, db: asyncpg.Connection, log_path: Path, n: int, database: str
) -> dict[str, Any]:
    await asyncio.sleep(1.5)  # let background loops settle between measurements
    offset = _size(log_path)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30.0) as http:
        instance_id = await runner.start_saga(http, WORKLOADS["order-3"], n)
    while True:
        status = await db.fetchval(
            "SELECT status FROM warren.instances WHERE id = $1::uuid", instance_id
        )
        if status in runner.TERMINAL:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    text = _read_from(log_path, offset)
    mine = await db.fetchval("SELECT pg_backend_pid()")
    statements = [(pid, sql) for pid, sql in _statements(text, database) if pid != mine]
    return {"status": status, **analyse(statements)}


async def _measure(stack: runner.Stack, log_path: Path, database: str) -> dict[str, Any]:
    await stack.wait_ready()
    db = await asyncpg.connect(stack.database_url)
    try:
        await runner.run_concurrent(stack, db, 20, 4, 60.0, offset=100)  # warm every connection
        return {
            "saga": SAGA_NAME,
            "completed_saga": await _one(stack, db, log_path, 0, database),
            "compensated_saga": await _one(stack, db, log_path, 9, database),
        }
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.roundtrips", description=__doc__)
    parser.add_argument(
        "--log", type=Path, default=Path("/var/log/postgresql/postgresql-15-main.log")
    )
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="warren-rt-") as tmp,
        runner.scratch_servers() as (database_url, amqp_url),
    ):
        database = database_url.rsplit("/", 1)[1]
        runner.SERVERS.run_admin(f"ALTER DATABASE \"{database}\" SET log_statement = 'all'")
        stack = runner.Stack(database_url, amqp_url, Path(tmp))
        with runner.running_stack(stack):
            figures = asyncio.run(_measure(stack, args.log, database))
    json.dump(figures, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
