"""The test harness tells the truth: each scenario run through the real processes (API,
orchestrator, workers, RabbitMQ, Postgres) and through the harness ends the same way, with the
same path, the same compensations in the same order, the same history and the same ledger.

Each scenario runs twice in the harness: driven by the same input as the real run (the
example's handlers fail as the input says), and driven by a script on a plain input (the
harness fails the step without running the handler)."""

from __future__ import annotations

from typing import Any

import pytest

from examples.orders.saga import order_saga
from examples.orders.workers import worker
from tests.conftest import Stack
from workers.testing import Fail, FailForGood, Outcome, SagaHarness, SagaResult

pytestmark = pytest.mark.e2e

ORDER = {"order_id": "E-1", "amount": 7}

# (name, the input's faults for the real run, the same faults as a harness script)
SCENARIOS: list[tuple[str, dict[str, Any], list[Outcome]]] = [
    ("completed", {}, []),
    (
        "refused_charge",
        {"fail_at": "charge"},
        [FailForGood(step="charge", type="OrderRejected")],
    ),
    (
        "flaky_stock",
        {"transient_failures": {"reserve_stock": 2}},
        [Fail(step="reserve_stock", times=2)],
    ),
    (
        "flaky_release",
        {"fail_at": "ship", "compensation_failures": {"reserve_stock": 2}},
        [
            FailForGood(step="ship", type="OrderRejected"),
            Fail(step="reserve_stock", compensation=True, times=2),
        ],
    ),
    (
        "release_fails_for_good",
        {"fail_at": "charge", "compensation_failures": {"reserve_credit": 5}},
        [
            FailForGood(step="charge", type="OrderRejected"),
            Fail(step="reserve_credit", compensation=True, times=5),
        ],
    ),
]


def outline(history: list[tuple[str, str | None, str | None, int | None]]) -> dict[str, Any]:
    """What must agree, read from a history of (type, step, phase, attempt)."""
    path = list(dict.fromkeys(step for kind, step, _, _ in history if kind == "step_dispatched"))
    return {
        "path": path,
        "compensated": [step for kind, step, _, _ in history if kind == "compensation_succeeded"],
        "history": history,
    }


def outline_of(result: SagaResult) -> dict[str, Any]:
    return outline(
        [
            (e.type, e.step, e.phase.value if e.phase is not None else None, e.attempt)
            for e in result.events
        ]
    )


async def test_the_harness_and_the_real_processes_agree(stack: Stack) -> None:
    await stack.up()
    real = {name: await stack.start({**ORDER, **faults}) for name, faults, _ in SCENARIOS}
    harness = SagaHarness(order_saga, worker, database_url=stack.probe.settings.database_url)

    for name, faults, script in SCENARIOS:
        status = await stack.probe.wait_terminal(real[name])
        rows = await stack.probe.history(real[name])
        expected = outline([(r["type"], r["step"], r["phase"], r["attempt"]) for r in rows])
        ledger = [action for _, action in await stack.probe.ledger(real[name])]

        for run in (
            await harness.run(input={**ORDER, **faults}),
            await harness.run(input=ORDER, script=script),
        ):
            assert (name, run.status) == (name, status)
            assert outline_of(run) == expected, name
            assert [action for _, action in await stack.probe.ledger(run.instance_id)] == ledger
