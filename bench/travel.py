"""The "travel" workload of the saga benchmark (issue 13): a flow.

A parallel of three bookings (flight, hotel, car; each compensable), then a choice of payment on
`input.payment` (card: `charge_card`, compensable; invoice: `send_invoice`), then a map over
the two passengers assigning each a seat (`assign_seat`, compensable; its input mapped from the
item). Handlers return a small dict and write nothing else; they are transactional (the
default), so every guarantee stays on, as in order-3. Every 10th instance fails at the second
passenger's seat and compensates everything before it.

    warren register bench.travel:travel
    warren worker --app bench.travel:worker --pool bookings
"""

from __future__ import annotations

from typing import Any

from orchestrator.definitions import Case, Choice, Compensation, Map, Parallel, Saga, Step, field
from workers import StepContext, StepFailed, Worker

SAGA_NAME = "travel"
POOLS = ("bookings", "payments")


def _booking(name: str) -> Step:
    return Step(name=name, pool="bookings", compensation=Compensation(command=f"cancel_{name}"))


travel = Saga(
    name=SAGA_NAME,
    version=1,
    description="Benchmark workload: book three things at once, pay, seat each passenger.",
    steps=[
        Parallel(
            name="book", branches=[[_booking("flight")], [_booking("hotel")], [_booking("car")]]
        ),
        Choice(
            name="pay",
            cases=[
                Case(
                    name="card",
                    when=field("input.payment") == "card",
                    steps=[
                        Step(
                            name="charge_card",
                            pool="payments",
                            compensation=Compensation(command="refund_card"),
                        )
                    ],
                )
            ],
            default=[Step(name="send_invoice", pool="payments")],
        ),
        Map(
            name="seats",
            items="input.passengers",
            steps=[
                Step(
                    name="assign_seat",
                    pool="bookings",
                    input_map={"passenger": "item", "trip": "input.trip_id"},
                    compensation=Compensation(command="free_seat"),
                )
            ],
        ),
    ],
)

worker = Worker("travel")


def travel_input(n: int) -> dict[str, Any]:
    """The input of the n-th instance (0-based): card or invoice in turn; every 10th fails."""
    data: dict[str, Any] = {
        "trip_id": f"T-{n}",
        "payment": "card" if n % 2 == 0 else "invoice",
        "passengers": [{"name": "ann"}, {"name": "bob", "fail": expected_status(n) != "completed"}],
    }
    return data


def expected_status(n: int) -> str:
    return "compensated" if n % 10 == 9 else "completed"


@worker.handler("flight", pool="bookings")
@worker.handler("hotel", pool="bookings")
@worker.handler("car", pool="bookings")
@worker.handler("cancel_flight", pool="bookings")
@worker.handler("cancel_hotel", pool="bookings")
@worker.handler("cancel_car", pool="bookings")
@worker.handler("free_seat", pool="bookings")
@worker.handler("charge_card", pool="payments")
@worker.handler("refund_card", pool="payments")
@worker.handler("send_invoice", pool="payments")
async def done(ctx: StepContext) -> dict[str, Any]:
    return {"ok": ctx.command}


@worker.handler("assign_seat", pool="bookings")
async def assign_seat(ctx: StepContext) -> dict[str, Any]:
    passenger = ctx.input["passenger"]
    if passenger.get("fail"):
        raise StepFailed(f"no seat left for {passenger['name']}", type="NoSeat")
    return {"seat": f"{passenger['name']}-1A", "trip": ctx.input["trip"]}
