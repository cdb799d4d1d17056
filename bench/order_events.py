"""The "events" workload of the saga benchmark (issue 14): order-3 with a wait for an event.

reserve_credit (payments) -> wait for ``payment.captured`` whose ``data.order_id`` equals the
instance's ``input.order_id`` -> reserve_stock (inventory) -> charge (payments); on completion
the saga emits ``order.completed``. The same three commands and compensations as order-3, so
the difference between the two runs is what an event in and an event out cost. The wait has a
timeout (10 minutes, never reached in a run), as a real one would: it adds a timer per wait.
Every 10th instance fails at `charge` and compensates, as in order-3, and emits nothing.

The benchmark publishes each instance's ``payment.captured`` to the events exchange as a
payment service would (CloudEvents binary mode, persistent, confirmed): for even n before the
instance starts (the event is kept until the wait takes it), for odd n once its wait has begun.

    warren register bench.order_events:order_events
    warren worker --app bench.order_events:worker --pool payments
"""

from __future__ import annotations

from typing import Any

from bench import order3
from examples.orders.saga import order_schema
from orchestrator.definitions import Emit, Saga, WaitFor
from orchestrator.messaging.cloudevents import CloudEvent

SAGA_NAME = "order_events"
POOLS = order3.POOLS
AWAITED = "payment.captured"
EMITTED = "order.completed"

order_events = Saga(
    name=SAGA_NAME,
    version=1,
    description="Benchmark workload: reserve credit, wait for the payment, reserve stock, charge.",
    input_schema=order_schema(fail={"type": "boolean"}),
    # order-3's steps, with the wait after the first: the difference is the event's cost.
    steps=[
        order3.order3.steps[0],
        WaitFor(
            name="payment",
            event=AWAITED,
            correlate="data.order_id",
            equals="input.order_id",
            timeout_seconds=600,
        ),
        *order3.order3.steps[1:],
    ],
    emits=[
        Emit(
            type=EMITTED,
            data={"order_id": "input.order_id", "payment_id": "results.payment.data.payment_id"},
            on="completed",
        )
    ],
)

# The handlers are order-3's: the same commands on the same pools.
worker = order3.worker


def order_input(n: int) -> dict[str, Any]:
    data = order3.order_input(n)
    data["order_id"] = f"E-{n}"
    return data


expected_status = order3.expected_status


def awaited_event(n: int) -> tuple[str, CloudEvent]:
    """The correlation value instance n waits on, and the event that satisfies it."""
    order_id = order_input(n)["order_id"]
    event = CloudEvent(
        id=f"capture-{n}",
        source="bench/payments",
        type=AWAITED,
        subject=order_id,
        data={"order_id": order_id, "payment_id": f"P-{n}", "amount": order_input(n)["amount"]},
    )
    return order_id, event


def event_first(n: int) -> bool:
    """Half the events are published before their instance starts, half once it waits."""
    return n % 2 == 0
