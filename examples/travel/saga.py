"""The example travel saga: every flow node kind in one trip.

    book (Parallel)      book_flight | book_hotel | book_car        bookings pool
    pay (Choice)         input.payment == "card"    -> pay_by_card: the `payment` saga
                                                       (authorize, then capture; billing pool)
                         input.payment == "invoice" -> send_invoice (billing pool)
    seats (Map)          assign_seat once per passenger, given the passenger and the flight
                         booking's result (seating pool)

Every step is compensable (cancel_flight, cancel_hotel, cancel_car; void and refund inside
`payment`; cancel_invoice; free_seat). The input decides whether and where it fails:
``"fail_at": "capture"`` fails that step for good (a key names one map item:
``"seats[1]/assign_seat"``); ``"transient_failures": {"book_car": 2}`` makes a step crash twice
before it succeeds. Register both sagas with ``warren register examples.travel.saga:sagas``.
"""

from typing import Any

from orchestrator import (
    Case,
    ChildSaga,
    Choice,
    Compensation,
    Map,
    Parallel,
    RetryPolicy,
    Saga,
    Step,
    field,
)

# Quick retries so the example's retries are visible in seconds.
QUICK_RETRY = RetryPolicy(max_attempts=3, initial_interval_seconds=0.2, backoff_coefficient=2.0)

# What injects failures, passed on to the child saga and into each map item.
FAULTS = {
    "fail_at": {"type": ["string", "null"]},
    "transient_failures": {
        "type": ["object", "null"],
        "additionalProperties": {"type": "integer", "minimum": 0},
    },
}
FAULT_PATHS = {"fail_at": "input.fail_at", "transient_failures": "input.transient_failures"}


def step(name: str, pool: str, *, undo: str, input_map: dict[str, str] | None = None) -> Step:
    """A step of the example: quick retries, 30 s per attempt, undone by `undo`."""
    return Step(
        name=name,
        pool=pool,
        compensation=Compensation(command=undo, retry=QUICK_RETRY),
        retry=QUICK_RETRY,
        timeout_seconds=30,
        input_map=input_map,
    )


def schema(required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "properties": {**properties, **FAULTS},
        "additionalProperties": False,
    }


TRIP = {"type": "string", "minLength": 1}
AMOUNT = {"type": "number", "exclusiveMinimum": 0}

payment_saga = Saga(
    name="payment",
    version=1,
    description="Authorize a card, then capture; void or refund on the way back.",
    input_schema=schema(["trip", "amount"], trip=TRIP, amount=AMOUNT),
    steps=[
        step("authorize", "billing", undo="void"),
        step("capture", "billing", undo="refund"),
    ],
)

travel_saga = Saga(
    name="travel",
    version=1,
    description="Book flight, hotel and car at once; pay by card or invoice; a seat each.",
    input_schema=schema(
        ["trip", "amount", "payment", "passengers"],
        trip=TRIP,
        amount=AMOUNT,
        payment={"enum": ["card", "invoice"]},
        passengers={
            "type": "array",
            "minItems": 1,
            "maxItems": 9,
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "minLength": 1}},
            },
        },
    ),
    steps=[
        Parallel(
            name="book",
            branches=[
                [step("book_flight", "bookings", undo="cancel_flight")],
                [step("book_hotel", "bookings", undo="cancel_hotel")],
                [step("book_car", "bookings", undo="cancel_car")],
            ],
        ),
        Choice(
            name="pay",
            cases=[
                Case(
                    name="card",
                    when=field("input.payment") == "card",
                    steps=[
                        ChildSaga(
                            name="pay_by_card",
                            saga="payment",
                            input_map={
                                "trip": "input.trip",
                                "amount": "input.amount",
                                **FAULT_PATHS,
                            },
                        )
                    ],
                ),
                Case(
                    name="invoice",
                    when=field("input.payment") == "invoice",
                    steps=[step("send_invoice", "billing", undo="cancel_invoice")],
                ),
            ],
        ),
        Map(
            name="seats",
            items="input.passengers",
            steps=[
                step(
                    "assign_seat",
                    "seating",
                    undo="free_seat",
                    input_map={
                        "passenger": "item.name",
                        "index": "index",
                        "flight": "results.book_flight.ref",
                        **FAULT_PATHS,
                    },
                )
            ],
        ),
    ],
)

sagas = [payment_saga, travel_saga]
"""Both, the child first: ``warren register examples.travel.saga:sagas``."""
