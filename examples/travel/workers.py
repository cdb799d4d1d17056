"""Handlers of the example travel and payment sagas. Like the order example's, each writes one
row to a ledger in the same transaction as the step, with NO unique constraint on (instance,
step, action): a duplicate effect or compensation would show as a second row.

A forward step's row holds the reference it made (``FL-<trip>``, a seat ``FL-<trip>/2``); a
compensation's row holds the reference it undoes, read from its step's result, so the ledger
also shows that each undo undid what its step did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Text, insert

from examples.ledger import create, ledger_table
from workers import StepContext, StepFailed, Worker

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

ledger = ledger_table("travel_example", Column("ref", Text, nullable=False))

PREFIX = {
    "book_flight": "FL",
    "book_hotel": "HT",
    "book_car": "CR",
    "authorize": "AU",
    "capture": "CP",
    "send_invoice": "IN",
}
"""The reference a forward command makes, by command (`assign_seat` makes a seat)."""
UNDOES = {
    "cancel_flight": "book_flight",
    "cancel_hotel": "book_hotel",
    "cancel_car": "book_car",
    "void": "authorize",
    "refund": "capture",
    "cancel_invoice": "send_invoice",
}
"""The step each compensation undoes (`free_seat` gets its seat in its input)."""

worker = Worker("travel")


@worker.on_startup
async def create_ledger(engine: AsyncEngine) -> None:
    await create(engine, ledger)


# Every command writes its ledger row the same way, so one handler serves them all.
@worker.handler("book_flight", pool="bookings")
@worker.handler("cancel_flight", pool="bookings")
@worker.handler("book_hotel", pool="bookings")
@worker.handler("cancel_hotel", pool="bookings")
@worker.handler("book_car", pool="bookings")
@worker.handler("cancel_car", pool="bookings")
@worker.handler("authorize", pool="billing")
@worker.handler("void", pool="billing")
@worker.handler("capture", pool="billing")
@worker.handler("refund", pool="billing")
@worker.handler("send_invoice", pool="billing")
@worker.handler("cancel_invoice", pool="billing")
@worker.handler("assign_seat", pool="seating")
@worker.handler("free_seat", pool="seating")
async def record(ctx: StepContext) -> dict[str, Any]:
    """Fail as the input asks, else write the command's ledger row in the step's transaction."""
    if ctx.phase == "forward":
        inject_faults(ctx)
    ref = reference(ctx)
    await ctx.session.execute(
        insert(ledger).values(
            instance_id=ctx.instance_id, step=ctx.step, action=ctx.command, ref=ref
        )
    )
    return {"ref": ref}


def inject_faults(ctx: StepContext) -> None:
    """`transient_failures` and `fail_at` name a step by its key (``seats[1]/assign_seat``,
    that item only) or its name (every item)."""
    name = ctx.step.rsplit("/", 1)[-1]
    crashes = ctx.input.get("transient_failures") or {}
    times = crashes.get(ctx.step, crashes.get(name, 0))
    if ctx.attempt <= times:
        raise RuntimeError(f"transient failure in {ctx.step} (attempt {ctx.attempt} of {times})")
    if ctx.input.get("fail_at") in (ctx.step, name):
        raise StepFailed(f"{ctx.step} refused", type="TripRejected")


def reference(ctx: StepContext) -> str:
    if ctx.command == "assign_seat":  # its input is mapped: the flight and the item
        return f"{ctx.input['flight']}/{ctx.input['index'] + 1}"
    if ctx.command == "free_seat":  # a mapped compensation gets its step's own result
        return str(ctx.input["result"]["ref"])
    if ctx.command in UNDOES:
        return str(ctx.results[UNDOES[ctx.command]]["ref"])
    return f"{PREFIX[ctx.command]}-{ctx.input['trip']}"
