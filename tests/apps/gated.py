"""A test worker app: the example order handlers, except that `reserve_credit` first waits for
the Postgres advisory lock `GATE_LOCK` inside its own transaction.

A test that holds that lock from its own connection keeps the handler blocked mid-transaction
(inbox row written, nothing committed) for as long as it likes, then lets it go by releasing it:

    warren worker --app tests.apps.gated:worker
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from examples.orders import workers as orders
from workers import StepContext, Worker

GATE_LOCK = 4242
"""The advisory lock key; it shows in pg_locks as locktype 'advisory', objid 4242."""

worker = Worker("gated-orders")
worker.on_startup(orders.create_ledger)


@worker.handler("reserve_credit", pool="payments")
async def reserve_credit(ctx: StepContext) -> Any:
    await ctx.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": GATE_LOCK})
    return await orders.record(ctx)


for _spec in orders.worker.handlers:
    if _spec.command != "reserve_credit":
        worker.handler(_spec.command, pool=_spec.pool)(_spec.fn)
