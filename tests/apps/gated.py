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
    return await orders.reserve_credit(ctx)


for _command, _pool, _handler in [
    ("release_credit", "payments", orders.release_credit),
    ("reserve_stock", "inventory", orders.reserve_stock),
    ("release_stock", "inventory", orders.release_stock),
    ("charge", "payments", orders.charge),
    ("refund", "payments", orders.refund),
    ("ship", "shipping", orders.ship),
]:
    worker.handler(_command, pool=_pool)(_handler)
