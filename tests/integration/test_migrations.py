"""Migrations are tested: upgrading an empty database gives exactly the models' schema."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import msgspec
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text

from orchestrator.engine import InstanceState, Phase, SagaStatus, StepReply, decide
from orchestrator.engine.state import SNAPSHOT_FORMAT, SnapshotTooNew, upgraded
from orchestrator.persistence import definitions, instances
from orchestrator.storage.database import create_engine
from orchestrator.storage.migrate import alembic_config, upgrade
from orchestrator.storage.tables import SCHEMA, metadata
from tests.support import services

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent.parent / "data"


@pytest.fixture
async def empty_database(run_id: str) -> AsyncIterator[str]:
    name = f"{run_id}_empty"
    await services.create_database(name)
    try:
        yield services.database_url(name)
    finally:
        await services.drop_database(name)


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "include_name": lambda name, type_, _: type_ != "schema" or name == SCHEMA,
            "compare_type": True,
            "version_table_schema": SCHEMA,
        },
    )
    return list(compare_metadata(context, metadata))


async def _schema_diff(url: str) -> list[object]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_diff)
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": SCHEMA}
            )
            return {row.tablename for row in rows}
    finally:
        await engine.dispose()


async def test_upgrade_from_empty_matches_the_models_exactly(empty_database: str) -> None:
    await asyncio.to_thread(upgrade, empty_database)

    assert await _schema_diff(empty_database) == []
    assert await _tables(empty_database) == {t.name for t in metadata.tables.values()} | {
        "alembic_version"
    }


async def test_downgrade_to_base_and_upgrade_again(empty_database: str) -> None:
    config = alembic_config(empty_database)
    await asyncio.to_thread(upgrade, empty_database)

    await asyncio.to_thread(command.downgrade, config, "base")
    assert await _tables(empty_database) == {"alembic_version"}

    await asyncio.to_thread(upgrade, empty_database)
    assert await _schema_diff(empty_database) == []


async def _data_through_upgrade(
    database: str,
    before: str,
    insert: str,
    params: dict[str, str],
    select: str,
) -> list[tuple[object, ...]]:
    """Rows written at revision `before` (`insert`), as `select` reads them at the head."""
    await asyncio.to_thread(upgrade, database, before)
    engine = create_engine(database, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(insert), params)
        await asyncio.to_thread(upgrade, database)
        async with engine.connect() as conn:
            return [tuple(row) for row in await conn.execute(text(select))]
    finally:
        await engine.dispose()


async def test_dead_letters_from_the_default_exchange_get_their_address_back(
    empty_database: str,
) -> None:
    """Rows recorded before 0006 stored the default exchange "" as null."""
    rows = await _data_through_upgrade(
        empty_database,
        "0005",
        "INSERT INTO warren.dead_letters (reason, origin_exchange, "
        "origin_routing_key, origin_queue, body, headers) VALUES "
        "('parked', NULL, 'q.a', NULL, '', :parked), "
        "('rejected', NULL, 'q.b', 'q.b', '', :died), "
        "('parked', 'commands', 'payments', NULL, '', :named)",
        {
            "parked": '{"x-warren-reason": "x", "x-warren-origin-exchange": ""}',
            "died": '{"x-death": [{"exchange": "", "queue": "q.b"}]}',
            "named": '{"x-warren-reason": "x", "x-warren-origin-exchange": "commands"}',
        },
        "SELECT origin_exchange, origin_routing_key, origin_queue "
        "FROM warren.dead_letters ORDER BY id",
    )

    assert rows == [
        ("", "q.a", "q.a"),
        ("", "q.b", "q.b"),
        ("commands", "payments", None),
    ]


async def test_copies_of_one_dead_letter_recorded_before_0007_become_one(
    empty_database: str,
) -> None:
    """Before 0007 each copy of a message parked was a row; a replay parked again still is."""
    rows = await _data_through_upgrade(
        empty_database,
        "0006",
        "INSERT INTO warren.dead_letters (message_id, reason, body, headers) VALUES "
        "('m-1', 'first', '', '{}'), ('m-1', 'copy', '', '{}'), "
        "('m-1', 'replayed', '', :replay), ('m-1', 'replay copy', '', :replay), "
        "(NULL, 'no id', '', '{}'), (NULL, 'no id either', '', '{}')",
        {"replay": '{"x-warren-replay-of": "1"}'},
        "SELECT message_id, reason, replay_of FROM warren.dead_letters ORDER BY id",
    )

    assert rows == [
        ("m-1", "first", None),
        ("m-1", "replayed", 1),
        (None, "no id", None),
        (None, "no id either", None),
    ]


async def test_a_saga_started_before_flows_loads_and_finishes_after_0008(
    empty_database: str,
) -> None:
    """A definition and a running instance as the release before flows stored them (format-1
    snapshot: no `format`, `nodes` or `parent`): after the upgrade the definition keeps its
    hash, the snapshot is format 2, and the instance runs to its end."""
    stored = json.loads((DATA / "before_flows.json").read_text())
    await asyncio.to_thread(upgrade, empty_database, "0007")
    engine = create_engine(empty_database, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO warren.definitions (name, version, content_hash, body) "
                    "VALUES ('legacy', 1, :hash, CAST(:body AS jsonb))"
                ),
                {"hash": stored["definition_hash"], "body": json.dumps(stored["definition"])},
            )
            await conn.execute(
                text(
                    "INSERT INTO warren.instances (id, saga_name, saga_version, status, seq, "
                    "state, created_at, updated_at) VALUES (:id, 'legacy', 1, 'running', 2, "
                    "CAST(:state AS jsonb), now(), now())"
                ),
                {"id": stored["snapshot"]["id"], "state": json.dumps(stored["snapshot"])},
            )
        await asyncio.to_thread(upgrade, empty_database)

        async with engine.begin() as conn:
            definition = await definitions.load(conn, "legacy", 1)
            outcome = await definitions.register(conn, definition)
            instance_id = UUID(stored["snapshot"]["id"])
            state = (await instances.load_many(conn, [instance_id]))[instance_id]
            raw_format = await conn.scalar(
                text("SELECT state->>'format' FROM warren.instances WHERE id = :id"),
                {"id": instance_id},
            )
    finally:
        await engine.dispose()

    assert definition.content_hash == stored["definition_hash"]
    assert outcome is definitions.RegisterOutcome.UNCHANGED
    assert raw_format == str(SNAPSHOT_FORMAT)
    assert (state.format, state.nodes, state.parent) == (SNAPSHOT_FORMAT, {}, None)
    later = datetime(2026, 11, 1, 0, 1, tzinfo=UTC)
    for step in ("reserve", "ship"):
        reply = StepReply(step=step, phase=Phase.FORWARD, attempt=1, ok=True)
        state = decide(definition, state, reply, later).instance
    assert state.status is SagaStatus.COMPLETED
    assert state.completed == ("reserve", "ship")


def test_a_snapshot_from_a_newer_warren_is_refused_not_misread() -> None:
    stored = json.loads((DATA / "before_flows.json").read_text())["snapshot"]
    newer = msgspec.convert({**stored, "format": SNAPSHOT_FORMAT + 1}, InstanceState)
    with pytest.raises(SnapshotTooNew, match="upgrade it"):
        upgraded(newer)
