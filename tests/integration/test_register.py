"""Registering definitions from Python and with `warren register`."""

from __future__ import annotations

import subprocess

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import orchestrator
from orchestrator.config import Settings
from orchestrator.errors import RegistrationConflict
from orchestrator.persistence.definitions import RegisterOutcome
from orchestrator.service.registry import register_saga
from tests.apps.sagas import refund, refund_changed, refund_v2
from tests.support.processes import assert_refused, run_warren, settings_env

pytestmark = pytest.mark.integration


def warren(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_warren(settings_env(settings), *args, timeout=60)


async def test_register_is_idempotent_and_versions_live_side_by_side(engine: AsyncEngine) -> None:
    assert await register_saga(engine, refund) is RegisterOutcome.CREATED
    assert await register_saga(engine, refund) is RegisterOutcome.UNCHANGED
    assert await register_saga(engine, refund_v2) is RegisterOutcome.CREATED

    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT version, content_hash FROM warren.definitions WHERE name = 'refund' ORDER BY version"
                )
            )
        ).all()
    assert [(r.version, r.content_hash) for r in rows] == [
        (1, refund.content_hash),
        (2, refund_v2.content_hash),
    ]


async def test_changed_content_under_the_same_version_is_refused(engine: AsyncEngine) -> None:
    await register_saga(engine, refund)

    with pytest.raises(RegistrationConflict, match="new version"):
        await register_saga(engine, refund_changed)


async def test_the_public_register_stores_definitions(engine: AsyncEngine) -> None:
    assert await orchestrator.register(engine, refund) == "created"
    assert await orchestrator.register(engine, refund) == "unchanged"
    with pytest.raises(orchestrator.RegistrationConflict):
        await orchestrator.register(engine, refund_changed)


def test_cli_register_reports_each_outcome(settings: Settings) -> None:
    first = warren(settings, "register", "tests.apps.sagas:both")
    again = warren(settings, "register", "tests.apps.sagas:refund")

    assert first.returncode == 0, first.stderr
    assert "refund v1: created" in first.stdout
    assert "refund v2: created" in first.stdout
    assert again.returncode == 0
    assert "refund v1: unchanged" in again.stdout


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.apps.sagas:refund_changed", "already registered with different content"),
        ("tests.apps.sagas:not_a_saga", "is not a Saga"),
        ("tests.apps.nowhere:saga", "cannot import module"),
        ("no_colon_here", "is not MODULE:ATTR"),
    ],
)
def test_cli_register_errors_are_one_clear_line(
    settings: Settings, target: str, message: str
) -> None:
    warren(settings, "register", "tests.apps.sagas:refund")

    result = warren(settings, "register", target)

    assert_refused(result, 1, message)


def test_cli_reports_an_unreachable_database_without_a_traceback(settings: Settings) -> None:
    unreachable = Settings(
        database_url="postgresql://postgres@127.0.0.1:1/none", amqp_url=settings.amqp_url
    )

    result = warren(unreachable, "register", "tests.apps.sagas:refund")

    assert_refused(result, 1, "database")
