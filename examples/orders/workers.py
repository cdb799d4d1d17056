"""Handlers of the example order saga. Each writes one row to a ledger in the same transaction
as the step, and the ledger has NO unique constraint on (instance, step): a duplicate effect
would show as a second row. The ledger is the proof of exactly-once.

They serve both versions of the saga: version 2 has no `charge` (the payment service's
`payment.captured` event stands for it), so its orders write no charge row."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Numeric, insert

from examples.ledger import create, ledger_table
from workers import StepContext, StepFailed, Worker

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

ledger = ledger_table("orders_example", Column("amount", Numeric, nullable=False))

worker = Worker("orders")


@worker.on_startup
async def create_ledger(engine: AsyncEngine) -> None:
    await create(engine, ledger)


# Every command of the example does the same thing, so one handler serves them all; a real app
# has one handler per command (README.md, docs/workers.md).
@worker.handler("reserve_credit", pool="payments")
@worker.handler("release_credit", pool="payments")
@worker.handler("charge", pool="payments")
@worker.handler("refund", pool="payments")
@worker.handler("reserve_stock", pool="inventory")
@worker.handler("release_stock", pool="inventory")
@worker.handler("ship", pool="shipping")
async def record(ctx: StepContext) -> dict[str, Any]:
    """Fail as the input asks, else write the command's ledger row in the step's transaction."""
    faults = "transient_failures" if ctx.phase == "forward" else "compensation_failures"
    crashes = ctx.input.get(faults, {}).get(ctx.step, 0)
    if ctx.attempt <= crashes:
        raise RuntimeError(f"{faults[:-1]} in {ctx.command} (attempt {ctx.attempt} of {crashes})")
    if ctx.phase == "forward" and ctx.input.get("fail_at") == ctx.step:
        raise StepFailed(f"{ctx.step} refused order {ctx.input['order_id']}", type="OrderRejected")
    action, amount = ctx.command, ctx.input["amount"]
    await ctx.session.execute(
        insert(ledger).values(
            instance_id=ctx.instance_id, step=ctx.step, action=action, amount=amount
        )
    )
    return {"action": action, "order_id": ctx.input["order_id"], "amount": amount}
