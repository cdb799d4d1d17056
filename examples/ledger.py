"""The examples' ledger: the proof of exactly-once.

A handler writes one row per effect and per compensation, in the step's own transaction. The
table has NO unique constraint on (instance, step, action): a duplicate effect would show as a
second row, where a constraint would hide it as an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Column, DateTime, Identity, MetaData, Table, Text, func, text
from sqlalchemy.dialects.postgresql import UUID

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


def ledger_table(schema: str, *columns: Column[object]) -> Table:
    """`<schema>.ledger`: who did what (instance, step, action), what else the example records
    (`columns`), and when."""
    return Table(
        "ledger",
        MetaData(schema=schema),
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("instance_id", UUID(as_uuid=True), nullable=False),
        Column("step", Text, nullable=False),
        Column("action", Text, nullable=False),
        *columns,
        Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


async def create(engine: AsyncEngine, ledger: Table) -> None:
    """Create the ledger's schema and table unless they exist (a worker's start-up hook)."""
    async with engine.begin() as conn:
        # Several workers start at once: serialise the CREATE statements.
        lock = f"{ledger.schema}.ledger"
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:lock))"), {"lock": lock})
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{ledger.schema}"'))
        await conn.run_sync(ledger.metadata.create_all)
