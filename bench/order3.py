"""The "order-3" workload of the saga benchmark (issue 6).

Three steps on two pools: reserve_credit (payments) -> reserve_stock (inventory) -> charge
(payments), with compensations release_credit and release_stock; charge has none. Handlers do
nothing but return a small dict and write nothing else; they are transactional (the default),
so every command still goes through the worker's inbox, step_results and outbox: every guarantee
stays on. An input with ``"fail": true`` makes `charge` raise StepFailed (a business failure, no
retry), and the saga compensates.

    warren register bench.order3:order3
    warren worker --app bench.order3:worker --pool payments
"""

from __future__ import annotations

from typing import Any

from examples.orders.saga import order_schema
from orchestrator.definitions import Compensation, Saga, Step
from workers import StepContext, StepFailed, Worker

SAGA_NAME = "order3"
POOLS = ("payments", "inventory")

order3 = Saga(
    name=SAGA_NAME,
    version=1,
    description="Benchmark workload: reserve credit and stock, charge; undo on failure.",
    input_schema=order_schema(fail={"type": "boolean"}),
    steps=[
        Step(
            name="reserve_credit",
            pool="payments",
            compensation=Compensation(command="release_credit"),
        ),
        Step(
            name="reserve_stock",
            pool="inventory",
            compensation=Compensation(command="release_stock"),
        ),
        Step(name="charge", pool="payments"),
    ],
)

worker = Worker("order3")


def order_input(n: int) -> dict[str, Any]:
    """The input of the n-th instance (0-based): every 10th one fails at `charge`."""
    data: dict[str, Any] = {"order_id": f"B-{n}", "amount": 10 + n % 90}
    if expected_status(n) == "compensated":
        data["fail"] = True
    return data


def expected_status(n: int) -> str:
    return "compensated" if n % 10 == 9 else "completed"


@worker.handler("reserve_credit", pool="payments")
@worker.handler("release_credit", pool="payments")
@worker.handler("reserve_stock", pool="inventory")
@worker.handler("release_stock", pool="inventory")
async def done(ctx: StepContext) -> dict[str, Any]:
    return {"ok": ctx.command, "order_id": ctx.input["order_id"]}


@worker.handler("charge", pool="payments")
async def charge(ctx: StepContext) -> dict[str, Any]:
    if ctx.input.get("fail"):
        raise StepFailed(f"card declined for {ctx.input['order_id']}", type="CardDeclined")
    return {"charged": ctx.input["amount"], "order_id": ctx.input["order_id"]}
