"""Alembic environment: async engine, every Warren table in the `warren` schema."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from alembic import context
from sqlalchemy import text

from orchestrator.config import Settings
from orchestrator.storage.database import create_engine
from orchestrator.storage.tables import SCHEMA, metadata

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

config = context.config
target_metadata = metadata


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    # Only our schema: never touch what the application keeps beside it.
    if type_ == "schema":
        return name == SCHEMA
    return True


def _run(connection: Connection) -> None:
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table_schema=SCHEMA,
        include_schemas=True,
        include_name=_include_name,
        compare_type=True,
        # `warren migrate` reports each migration it ran (orchestrator/storage/migrate.py)
        on_version_apply=config.attributes.get("on_version_apply", ()),
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url
    engine = create_engine(url, pool_size=1)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run `warren migrate`")
asyncio.run(_run_online())
