"""`warren worker --concurrency` per pool: by default 2 transactions at once for a pool whose
commands are batched, 8 commands at once for one handled one command at a time; a value given
applies to every pool."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.config import Settings
from workers import StepContext, Worker
from workers.runtime import WorkerRunner

app = Worker("lanes")


@app.handler("charge", pool="payments")
async def charge(ctx: StepContext) -> dict[str, Any]:
    return {}


@app.handler("render", pool="reports", transactional=False)
async def render(ctx: StepContext) -> dict[str, Any]:
    return {}


def _lanes(runner: WorkerRunner) -> dict[str, tuple[int, int, int]]:
    """Per pool: lanes, commands per batch, prefetch."""
    return {
        pool: (consumer.lanes, consumer.batch_size, consumer.prefetch)
        for pool, consumer in zip(runner.pools, runner.consumers, strict=True)
    }


@pytest.mark.parametrize(
    ("concurrency", "batch_size", "expected"),
    [
        (None, 32, {"payments": (2, 32, 32), "reports": (8, 1, 8)}),
        (None, 1, {"payments": (8, 1, 8), "reports": (8, 1, 8)}),
        (5, 32, {"payments": (5, 32, 32), "reports": (5, 1, 5)}),
        (1, 32, {"payments": (1, 32, 32), "reports": (1, 1, 1)}),
    ],
)
def test_each_pool_gets_its_default_concurrency_unless_one_is_given(
    concurrency: int | None, batch_size: int, expected: dict[str, tuple[int, int, int]]
) -> None:
    settings = Settings(batch_size=batch_size)
    runner = WorkerRunner(app, settings, concurrency=concurrency, check_definitions=False)
    assert _lanes(runner) == expected
