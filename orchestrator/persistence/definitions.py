"""The definitions table: stored saga definitions, (name, version) → content, immutable once
registered; and the reads of the definitions pages."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

import msgspec
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from orchestrator.definitions import Saga
from orchestrator.errors import RegistrationConflict, SagaNotFound
from orchestrator.storage.database import driver
from orchestrator.storage.tables import definitions

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection

    from orchestrator.api.schema import DefinitionSummary, StoredDefinition

# On every start's path: sent on the driver connection (storage.database.driver).
_LATEST_VERSIONS = """
SELECT name, max(version) AS version FROM warren.definitions WHERE name = ANY($1::text[])
GROUP BY name"""


class RegisterOutcome(StrEnum):
    CREATED = "created"
    """Stored for the first time."""
    UNCHANGED = "unchanged"
    """The same content was stored already: nothing to do."""


async def register(conn: AsyncConnection, saga: Saga) -> RegisterOutcome:
    inserted = await conn.execute(
        insert(definitions)
        .values(
            name=saga.name,
            version=saga.version,
            content_hash=saga.content_hash,
            body=saga,
        )
        .on_conflict_do_nothing()
        .returning(definitions.c.name)
    )
    if inserted.first() is not None:
        return RegisterOutcome.CREATED
    stored = await conn.scalar(
        select(definitions.c.content_hash).where(
            definitions.c.name == saga.name, definitions.c.version == saga.version
        )
    )
    if stored == saga.content_hash:
        return RegisterOutcome.UNCHANGED
    raise RegistrationConflict(
        f"saga {saga.name!r} version {saga.version} is already registered with different "
        f"content (stored hash {str(stored)[:12]}, yours {saga.content_hash[:12]}); "
        "definitions are immutable: give the changed saga a new version"
    )


async def load(conn: AsyncConnection, name: str, version: int | None = None) -> Saga:
    """The definition `name` at `version`, or its latest version."""
    query = select(definitions.c.body).where(definitions.c.name == name)
    if version is None:
        query = query.order_by(definitions.c.version.desc()).limit(1)
    else:
        query = query.where(definitions.c.version == version)
    body = await conn.scalar(query)
    if body is None:
        which = f"version {version} of saga" if version is not None else "saga"
        raise SagaNotFound(f"no {which} {name!r} is registered")
    return Saga.from_json(msgspec.json.encode(body))


async def load_latest(conn: AsyncConnection) -> list[Saga]:
    """The latest version of every registered saga, by name."""
    d = definitions.c
    latest = select(d.name, func.max(d.version).label("version")).group_by(d.name).subquery()
    rows = await conn.execute(
        select(d.body)
        .join(latest, (d.name == latest.c.name) & (d.version == latest.c.version))
        .order_by(d.name)
    )
    return [Saga.from_json(msgspec.json.encode(body)) for body in rows.scalars()]


async def list_definitions(conn: AsyncConnection) -> list[DefinitionSummary]:
    # The API's row types, imported on use: a worker reads definitions through this module
    # (its startup check) and loads no API code.
    from orchestrator.api.schema import DefinitionSummary

    d = definitions.c
    rows = await conn.execute(
        select(
            d.name,
            func.max(d.version).label("latest"),
            func.array_agg(d.version).label("versions"),
            func.max(d.registered_at).label("registered_at"),
        )
        .group_by(d.name)
        .order_by(d.name)
    )
    return [
        DefinitionSummary(
            name=r.name,
            latest_version=r.latest,
            versions=sorted(r.versions),
            registered_at=r.registered_at,
        )
        for r in rows
    ]


async def definition_versions(conn: AsyncConnection, name: str) -> list[StoredDefinition]:
    from orchestrator.api.schema import StoredDefinition

    d = definitions.c
    rows = await conn.execute(
        select(d.version, d.content_hash, d.registered_at, d.body)
        .where(d.name == name)
        .order_by(d.version)
    )
    return [StoredDefinition(**r._mapping) for r in rows]


async def keys(conn: AsyncConnection) -> list[tuple[str, int]]:
    """(name, version) of every stored definition."""
    rows = await conn.execute(select(definitions.c.name, definitions.c.version))
    return [(r.name, r.version) for r in rows]


async def registered_marker(conn: AsyncConnection) -> tuple[int, datetime | None]:
    """How many definitions are stored, and when the newest was: changes when one is
    registered (definitions are never changed nor deleted)."""
    row = (await conn.execute(select(func.count(), func.max(definitions.c.registered_at)))).one()
    return int(row[0]), row[1]


class DefinitionCache:
    """Definitions never change once stored, so a process keeps each one it has read."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], Saga] = {}

    async def get(self, conn: AsyncConnection, name: str, version: int) -> Saga:
        saga = self._by_key.get((name, version))
        if saga is None:
            saga = await load(conn, name, version)
            self._by_key[(name, version)] = saga
        return saga

    async def latest_versions(self, conn: AsyncConnection, names: set[str]) -> dict[str, int]:
        """The latest version of each of `names` that is registered (one statement)."""
        if not names:
            return {}
        rows = await (await driver(conn)).fetch(_LATEST_VERSIONS, sorted(names))
        return {row["name"]: row["version"] for row in rows}

    async def get_latest_or(
        self,
        conn: AsyncConnection,
        name: str,
        version: int | None,
        *,
        latest: dict[str, int] | None = None,
    ) -> Saga:
        """`version` of `name`, or its latest version: read the number (new versions may have
        been registered; `latest` when the caller read it already, for several names), then
        take the definition from the cache."""
        if version is None:
            if latest is None:
                latest = await self.latest_versions(conn, {name})
            version = latest.get(name)
            if version is None:
                raise SagaNotFound(f"no saga {name!r} is registered")
        return await self.get(conn, name, version)
