"""A worker app with a plain `def` handler: refused when the module is imported."""

from __future__ import annotations

from typing import Any

from workers import StepContext, Worker

worker = Worker("sync")


@worker.handler("take", pool="fast")  # type: ignore[arg-type]
def take(ctx: StepContext) -> dict[str, Any]:
    return {"took": ctx.step}
