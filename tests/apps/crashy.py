"""A worker app whose `reserve_credit` kills its own process for orders named CRASH: the
delivery limit must dead-letter that command instead of redelivering it forever."""

from __future__ import annotations

import os
from typing import Any

from examples.orders import workers as example
from workers import StepContext, Worker

worker = Worker("crashy-orders")


@worker.handler("reserve_credit", pool="payments")
async def reserve_credit(ctx: StepContext) -> dict[str, Any]:
    if ctx.input["order_id"] == "CRASH":
        os._exit(1)
    result: dict[str, Any] = await example.record(ctx)
    return result


for _command in ("release_credit", "charge", "refund"):
    worker.handler(_command, pool="payments")(example.record)
