"""Saga definitions used by the registration tests."""

from orchestrator.definitions import (
    Case,
    ChildSaga,
    Choice,
    Compensation,
    Emit,
    Map,
    Parallel,
    RetryPolicy,
    Saga,
    Step,
    Trigger,
    WaitFor,
    field,
)

ONCE = RetryPolicy(max_attempts=1)

refund = Saga(
    name="refund",
    version=1,
    steps=[
        Step(name="refund_card", pool="payments", compensation=Compensation(command="recharge"))
    ],
)

# The same (name, version) as `refund` with different content: must be refused.
refund_changed = Saga(
    name="refund",
    version=1,
    steps=[Step(name="refund_card", pool="payments", timeout_seconds=5)],
)

refund_v2 = Saga(name="refund", version=2, steps=[Step(name="refund_card", pool="billing")])

both = [refund, refund_v2]

not_a_saga = 42

# `hold` runs on a pool nobody serves: its only attempt always times out.
timing_out = Saga(
    name="timing-out",
    version=1,
    steps=[
        Step(name="take", pool="fast", compensation=Compensation(command="give_back")),
        Step(
            name="hold",
            pool="nobody",
            retry=RetryPolicy(max_attempts=1),
            timeout_seconds=0.5,
            compensation=Compensation(command="release", pool="fast"),
        ),
    ],
)

# Its second step runs on a pool nobody serves: the deadline stops the saga at 1 s; the step in
# flight is waited for until its own timeout, then the first step is undone.
deadlined = Saga(
    name="deadlined",
    version=1,
    deadline_seconds=1.0,
    steps=[
        Step(name="take", pool="fast", compensation=Compensation(command="give_back")),
        Step(name="hold", pool="nobody", timeout_seconds=2.0, retry=RetryPolicy(max_attempts=5)),
    ],
)

# The second step waits 0.3 s after the first.
delayed = Saga(
    name="delayed",
    version=1,
    steps=[
        Step(name="take", pool="fast"),
        Step(name="release", pool="fast", delay_seconds=0.3),
    ],
)

# Deployed with tests.apps.fast:worker, which has no handler for `missing` (a step) nor for
# `put_back` (the compensation of `take`): a forgotten handler, forward and backward.
forgotten = Saga(
    name="forgotten",
    version=1,
    steps=[
        Step(name="take", pool="fast", compensation=Compensation(command="put_back")),
        Step(name="missing", pool="fast"),
    ],
)

# ---- child sagas (tests/e2e/test_child_sagas.py); the `fast` pool answers take/give_back --

# A child that takes, undone by giving back.
kid = Saga(
    name="kid",
    version=1,
    steps=[Step(name="take", pool="fast", compensation=Compensation(command="give_back"))],
)

# Runs `kid`, then a step of its own; with `then_fail`, that step times out on a pool nobody
# serves, and the parent compensates: `kid` is undone.
parent = Saga(
    name="parent",
    version=1,
    steps=[
        ChildSaga(name="run_kid", saga="kid", input_map={"who": "input.who"}),
        Choice(
            name="then",
            cases=[
                Case(
                    name="fail",
                    when=field("input.then_fail") == True,  # noqa: E712 - a condition, not a test
                    steps=[
                        Step(
                            name="hold",
                            pool="nobody",
                            timeout_seconds=0.5,
                            retry=RetryPolicy(max_attempts=1),
                        )
                    ],
                )
            ],
            default=[Step(name="after", pool="fast", command="take")],
        ),
    ],
)

# A child whose only step waits an hour: cancelling its parent cancels it before it runs.
slow_kid = Saga(
    name="slow-kid",
    version=1,
    steps=[Step(name="take", pool="fast", delay_seconds=3600)],
)

waits_for_slow_kid = Saga(
    name="waits-for-slow-kid",
    version=1,
    steps=[
        Step(
            name="first",
            pool="fast",
            command="take",
            compensation=Compensation(command="give_back"),
        ),
        ChildSaga(name="run_slow_kid", saga="slow-kid"),
    ],
)


# ---- every flow node kind, nested: the graph and instance view tests ------------------------
trip = Saga(
    name="trip",
    version=1,
    steps=[
        Step(name="reserve", pool="payments", compensation=Compensation(command="release")),
        Parallel(
            name="book",
            branches=[
                [Step(name="flight", pool="air", compensation=Compensation(command="cancel"))],
                [
                    Map(
                        name="seats",
                        items="input.passengers",
                        steps=[Step(name="assign", pool="air")],
                    )
                ],
            ],
        ),
        Choice(
            name="pay",
            cases=[
                Case(
                    name="card",
                    when=field("input.method") == "card",
                    steps=[Step(name="charge", pool="payments")],
                )
            ],
            default=[ChildSaga(name="invoice", saga="invoicing")],
        ),
    ],
)


# ---- events (tests/e2e/test_events.py) ------------------------------------------------------

CAPTURED_SCHEMA = {
    "type": "object",
    "required": ["order_id", "amount"],
    "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
}


def _paid(name: str, timeout: float) -> Saga:
    """take -> wait for this order's payment.captured -> give_back; emits order.paid."""
    return Saga(
        name=name,
        version=1,
        steps=[
            Step(
                name="take", pool="fast", retry=ONCE, compensation=Compensation(command="release")
            ),
            WaitFor(
                name="payment",
                event="payment.captured",
                correlate="data.order_id",
                equals="input.order_id",
                timeout_seconds=timeout,
            ),
            Step(name="give_back", pool="fast", retry=ONCE),
        ],
        emits=[
            Emit(
                type="order.paid",
                on="completed",
                data={"order_id": "input.order_id", "amount": "results.payment.data.amount"},
            )
        ],
        event_schemas={"payment.captured": CAPTURED_SCHEMA},
        triggers=[
            Trigger(
                event="order.placed", input_map={"order_id": "data.order_id"}, key="data.order_id"
            )
        ]
        if name == "paid"
        else [],
    )


paid = _paid("paid", timeout=300)
"""Started by each order.placed event (one per event id), or by the API."""
paid_briefly = _paid("paid-briefly", timeout=1)
"""Gives up on the payment after a second: compensates."""

approved = Saga(
    name="approved",
    version=1,
    steps=[
        Step(name="take", pool="fast", retry=ONCE, compensation=Compensation(command="release")),
        WaitFor(name="approval", signal="approve", timeout_seconds=300),
        Step(name="give_back", pool="fast", retry=ONCE),
    ],
)
