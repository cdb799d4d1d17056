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
    result: dict[str, Any] = await example.reserve_credit(ctx)
    return result


worker.handler("release_credit", pool="payments")(example.release_credit)
worker.handler("charge", pool="payments")(example.charge)
worker.handler("refund", pool="payments")(example.refund)
