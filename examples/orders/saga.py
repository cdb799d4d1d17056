"""The example order saga: four steps on three worker pools, three of them compensable.

The input decides whether and where it fails, so you can watch a compensation:
``{"order_id": "A-1", "amount": 30, "fail_at": "charge"}`` fails at `charge` for good
(a business failure), then releases the stock and the credit, newest first.
``"transient_failures": {"reserve_stock": 2}`` makes that step crash twice before it succeeds;
``"compensation_failures": {"reserve_credit": 5}`` makes that compensation crash five times, more
than its three attempts: the instance ends `failed`, and `warren retry` resumes it.

Version 2 (`order_saga_v2`, same name) leaves the charge to the payment service: after the
reservations it waits for that service's `payment.captured` event for this order, then ships and
publishes `order.shipped`; no payment within the timeout, and the reservations are undone
(docs/events.md). Version 1 stays the default of `warren dev` and of the tests.
"""

from typing import Any

from orchestrator import Compensation, Emit, RetryPolicy, Saga, Step, WaitFor

STEP_NAMES = ["reserve_credit", "reserve_stock", "charge", "ship"]

# Quick retries so the example's retries are visible in seconds.
QUICK_RETRY = RetryPolicy(max_attempts=3, initial_interval_seconds=0.2, backoff_coefficient=2.0)

# A count by step name, e.g. {"reserve_stock": 2}.
COUNTS_BY_STEP = {
    "type": "object",
    "propertyNames": {"enum": STEP_NAMES},
    "additionalProperties": {"type": "integer", "minimum": 0},
}


def order_schema(**more: Any) -> dict[str, Any]:
    """The input schema of an order: an id and an amount, plus the properties `more` names,
    nothing else. The benchmark's order workload (bench/order3.py) takes it too."""
    return {
        "type": "object",
        "required": ["order_id", "amount"],
        "properties": {
            "order_id": {"type": "string", "minLength": 1},
            "amount": {"type": "number", "exclusiveMinimum": 0},
            **more,
        },
        "additionalProperties": False,
    }


def step(name: str, pool: str, *, undo: str | None = None) -> Step:
    """A step of the example: quick retries, 30 s per attempt; `undo` names its compensation."""
    compensation = None if undo is None else Compensation(command=undo, retry=QUICK_RETRY)
    return Step(
        name=name, pool=pool, compensation=compensation, retry=QUICK_RETRY, timeout_seconds=30
    )


order_saga = Saga(
    name="order",
    version=1,
    description="Reserve credit and stock, charge, ship; undo in reverse on failure.",
    input_schema=order_schema(
        items={"type": "array", "items": {"type": "string"}},
        fail_at={"enum": STEP_NAMES},
        transient_failures=COUNTS_BY_STEP,
        compensation_failures=COUNTS_BY_STEP,
    ),
    steps=[
        step("reserve_credit", "payments", undo="release_credit"),
        step("reserve_stock", "inventory", undo="release_stock"),
        step("charge", "payments", undo="refund"),
        step("ship", "shipping"),
    ],
)


V2_STEP_NAMES = ["reserve_credit", "reserve_stock", "ship"]

PAYMENT_TIMEOUT_SECONDS = 900.0
"""How long version 2 waits for the payment before it undoes the reservations."""

PAYMENT_CAPTURED = {
    "type": "object",
    "required": ["order_id", "amount"],
    "properties": {
        "order_id": {"type": "string", "minLength": 1},
        "amount": {"type": "number", "exclusiveMinimum": 0},
    },
}
"""The data of a `payment.captured` event, as version 2 declares it: others are refused."""


def _counts_by(steps: list[str]) -> dict[str, Any]:
    return {**COUNTS_BY_STEP, "propertyNames": {"enum": steps}}


order_saga_v2 = Saga(
    name="order",
    version=2,
    description=(
        "Reserve credit and stock, wait for the payment service's payment.captured, ship; "
        "undo in reverse on failure or when no payment comes."
    ),
    input_schema=order_schema(
        items={"type": "array", "items": {"type": "string"}},
        fail_at={"enum": V2_STEP_NAMES},
        transient_failures=_counts_by(V2_STEP_NAMES),
        compensation_failures=_counts_by(V2_STEP_NAMES),
    ),
    steps=[
        step("reserve_credit", "payments", undo="release_credit"),
        step("reserve_stock", "inventory", undo="release_stock"),
        WaitFor(
            name="payment",
            event="payment.captured",
            correlate="data.order_id",
            equals="input.order_id",
            timeout_seconds=PAYMENT_TIMEOUT_SECONDS,
        ),
        step("ship", "shipping"),
    ],
    emits=[
        Emit(
            type="order.shipped",
            on="completed",
            data={"order_id": "input.order_id", "amount": "results.payment.data.amount"},
        )
    ],
    event_schemas={"payment.captured": PAYMENT_CAPTURED},
)
