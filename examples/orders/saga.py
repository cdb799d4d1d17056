"""The example order saga: four steps on three worker pools, three of them compensable.

The input decides whether and where it fails, so you can watch a compensation:
``{"order_id": "A-1", "amount": 30, "fail_at": "charge"}`` fails at `charge` for good
(a business failure), then releases the stock and the credit, newest first.
``"transient_failures": {"reserve_stock": 2}`` makes that step crash twice before it succeeds;
``"compensation_failures": {"reserve_credit": 5}`` makes that compensation crash five times, more
than its three attempts: the instance ends `failed`, and `warren retry` resumes it.
"""

from orchestrator import Compensation, RetryPolicy, Saga, Step

STEP_NAMES = ["reserve_credit", "reserve_stock", "charge", "ship"]

# Quick retries so the example's retries are visible in seconds.
QUICK_RETRY = RetryPolicy(max_attempts=3, initial_interval_seconds=0.2, backoff_coefficient=2.0)

order_saga = Saga(
    name="order",
    version=1,
    description="Reserve credit and stock, charge, ship; undo in reverse on failure.",
    input_schema={
        "type": "object",
        "required": ["order_id", "amount"],
        "properties": {
            "order_id": {"type": "string", "minLength": 1},
            "amount": {"type": "number", "exclusiveMinimum": 0},
            "items": {"type": "array", "items": {"type": "string"}},
            "fail_at": {"enum": STEP_NAMES},
            "transient_failures": {
                "type": "object",
                "propertyNames": {"enum": STEP_NAMES},
                "additionalProperties": {"type": "integer", "minimum": 0},
            },
            "compensation_failures": {
                "type": "object",
                "propertyNames": {"enum": STEP_NAMES},
                "additionalProperties": {"type": "integer", "minimum": 0},
            },
        },
        "additionalProperties": False,
    },
    steps=[
        Step(
            name="reserve_credit",
            pool="payments",
            compensation=Compensation(command="release_credit", retry=QUICK_RETRY),
            retry=QUICK_RETRY,
            timeout_seconds=30,
        ),
        Step(
            name="reserve_stock",
            pool="inventory",
            compensation=Compensation(command="release_stock", retry=QUICK_RETRY),
            retry=QUICK_RETRY,
            timeout_seconds=30,
        ),
        Step(
            name="charge",
            pool="payments",
            compensation=Compensation(command="refund", retry=QUICK_RETRY),
            retry=QUICK_RETRY,
            timeout_seconds=30,
        ),
        Step(name="ship", pool="shipping", retry=QUICK_RETRY, timeout_seconds=30),
    ],
)
