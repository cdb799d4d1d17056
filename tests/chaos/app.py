"""The chaos run's worker app: the order example's handlers and the travel example's in one
app. Each worker process (one per role) serves an order pool and a travel pool, so the travel
saga's workers meet every fault the order saga's do, and the run has no more processes.

It also holds the event-driven saga of the run's event traffic (`placed_order`): started by
`order.placed` events, it runs the order example's steps on the same pools, waits for the
order's `payment.captured` and says `order.fulfilled` when it completes."""

from __future__ import annotations

from examples.orders.saga import order_schema, step
from examples.orders.workers import worker as orders
from examples.travel.workers import worker as travel
from orchestrator.definitions import Emit, Saga, Trigger, WaitFor
from workers import Worker

worker = Worker("chaos")
for app in (orders, travel):
    for spec in app.handlers:
        worker.handler(spec.command, pool=spec.pool, transactional=spec.transactional)(spec.fn)
    for hook in app.startup_hooks:
        worker.on_startup(hook)

PLACED_ORDER_STEPS = ["reserve_credit", "reserve_stock", "ship"]
"""The effects of a placed order, in order (the payment is the event it waits for)."""

placed_order = Saga(
    name="placed-order",
    version=1,
    description="Started by order.placed; reserve, wait for the payment, ship.",
    input_schema=order_schema(),
    steps=[
        step("reserve_credit", "payments", undo="release_credit"),
        step("reserve_stock", "inventory", undo="release_stock"),
        # An hour: far longer than any run's load and drain, so a timeout is a lost event.
        WaitFor(
            name="payment",
            event="payment.captured",
            correlate="data.order_id",
            equals="input.order_id",
            timeout_seconds=3600,
        ),
        step("ship", "shipping"),
    ],
    triggers=[
        Trigger(
            event="order.placed",
            input_map={"order_id": "data.order_id", "amount": "data.amount"},
            key="data.order_id",
        )
    ],
    event_schemas={
        "payment.captured": {
            "type": "object",
            "required": ["order_id", "amount"],
            "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
        }
    },
    emits=[
        Emit(
            type="order.fulfilled",
            on="completed",
            data={"order_id": "input.order_id", "payment": "results.payment.id"},
        )
    ],
)
