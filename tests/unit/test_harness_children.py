"""The test harness runs `ChildSaga` nodes: each child saga an instance of its own on the same
in-memory wire and clock, started, undone and cancelled as the orchestrators do it."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import ChildSaga, Compensation, Map, Saga, Step
from workers import StepContext, Worker
from workers.testing import Cancel, Fail, FailForGood, HarnessError, SagaHarness, TimeOut


def step(name: str, pool: str = "shop") -> Step:
    """A step undone by ``undo_<name>``."""
    return Step(name=name, pool=pool, compensation=Compensation(command=f"undo_{name}"))


payment = Saga(
    name="payment",
    version=1,
    steps=[step("hold_funds", "payments"), step("capture", "payments")],
)
order = Saga(
    name="order",
    version=1,
    steps=[
        step("reserve_stock"),
        ChildSaga(name="pay", saga="payment", input_map={"amount": "input.total"}),
        step("ship"),
    ],
)


def recording_worker(calls: list[str]) -> Worker:
    """Handlers for both sagas that note each command (with the saga it came from) and echo
    their input."""
    worker = Worker("shop")

    async def echo(ctx: StepContext) -> dict[str, Any]:
        calls.append(f"{ctx.saga}:{ctx.command}")
        return {"input": ctx.input}

    for saga in (order, payment):
        for task in saga.tasks:
            if isinstance(task, Step):
                worker.handler(task.command_name, pool=task.pool, transactional=False)(echo)
                assert task.compensation is not None
                worker.handler(task.compensation.command, pool=task.pool, transactional=False)(echo)
    return worker


async def test_a_child_that_completes_gives_the_node_its_results() -> None:
    calls: list[str] = []
    harness = SagaHarness(order, recording_worker(calls), sagas=[payment])

    result = await harness.run(input={"total": 30})

    assert result.status == "completed"
    assert result.path == ["reserve_stock", "pay", "ship"]
    assert calls == [
        "order:reserve_stock",
        "payment:hold_funds",
        "payment:capture",
        "order:ship",
    ]
    child = result.children["pay"]
    assert child.status == "completed"
    assert child.path == ["hold_funds", "capture"]
    assert child.instance.parent is not None
    assert child.instance.parent.instance_id == result.instance_id
    # The child ran with the node's mapped input; its results became the node's.
    assert child.results["hold_funds"] == {"input": {"amount": 30}}
    assert result.results["pay"] == child.results


async def test_a_later_failure_undoes_the_completed_child_newest_first() -> None:
    calls: list[str] = []
    harness = SagaHarness(order, recording_worker(calls), sagas=[payment])

    result = await harness.run(input={"total": 30}, script=[FailForGood(step="ship")])

    assert result.status == "compensated"
    assert result.compensated == ["pay", "reserve_stock"]
    child = result.children["pay"]
    assert child.status == "compensated"
    assert child.compensated == ["capture", "hold_funds"]
    assert "child_undo_requested" in child.history
    # The child finishes its own compensations before the parent undoes the step before it.
    assert calls[-3:] == [
        "payment:undo_capture",
        "payment:undo_hold_funds",
        "order:undo_reserve_stock",
    ]


async def test_a_child_that_fails_fails_the_node_and_the_parent_compensates() -> None:
    result = await SagaHarness(order, sagas=[payment]).run(
        input={"total": 30}, script=[FailForGood(step="capture", type="CardDeclined")]
    )

    assert result.status == "compensated"
    assert result.failure is not None
    assert result.failure.type == "ChildFailed"
    assert "CardDeclined" in result.failure.message
    assert result.path == ["reserve_stock", "pay"]
    assert result.compensated == ["reserve_stock"]  # the child undid its own steps
    child = result.children["pay"]
    assert child.status == "compensated"
    assert child.compensated == ["hold_funds"]


async def test_cancelling_the_parent_cancels_the_running_child() -> None:
    result = await SagaHarness(order, sagas=[payment]).run(
        input={"total": 30}, script=[Cancel(step="capture", at="dispatched")]
    )

    assert result.status == "compensated"
    assert result.failure is not None
    assert result.failure.type == "Cancelled"
    assert "child_cancel_sent" in result.history
    assert result.compensated == ["reserve_stock"]
    child = result.children["pay"]
    assert "saga_cancel_requested" in child.history
    assert child.failure is not None
    assert "stopped going forward" in child.failure.message
    # capture was in flight: it succeeded late and was undone too.
    assert child.compensated == ["capture", "hold_funds"]


async def test_a_child_saga_the_harness_was_not_given_fails_the_node() -> None:
    other = Saga(name="other", version=3, steps=[step("noop")])

    result = await SagaHarness(order, sagas=[other]).run(input={"total": 30})

    assert result.status == "compensated"
    assert result.failure is not None
    assert result.failure.type == "SagaNotFound"
    assert "'payment'" in result.failure.message
    assert "other v3" in result.failure.message  # what it was given
    assert result.compensated == ["reserve_stock"]
    assert result.children == {}


async def test_a_child_input_that_does_not_match_its_schema_fails_the_node() -> None:
    strict = Saga(
        name="payment",
        version=1,
        steps=payment.steps,
        input_schema={"type": "object", "required": ["amount", "currency"]},
    )

    result = await SagaHarness(order, sagas=[strict]).run(input={"total": 30})

    assert result.status == "compensated"
    assert result.failure is not None
    assert result.failure.type == "InputInvalid"
    assert "currency" in result.failure.message


async def test_the_child_runs_the_pinned_version_or_the_newest_given() -> None:
    newer = Saga(name="payment", version=2, steps=[step("charge", "payments")])
    pinned = Saga(
        name="pinned",
        version=1,
        steps=[ChildSaga(name="pay", saga="payment", version=1)],
    )
    latest = Saga(name="latest", version=1, steps=[ChildSaga(name="pay", saga="payment")])

    old = await SagaHarness(pinned, sagas=[newer, payment]).run(input={})
    new = await SagaHarness(latest, sagas=[payment, newer]).run(input={})

    assert old.children["pay"].path == ["hold_funds", "capture"]
    assert new.children["pay"].path == ["charge"]


async def test_a_child_whose_undo_fails_for_good_leaves_both_failed() -> None:
    result = await SagaHarness(order, sagas=[payment]).run(
        input={"total": 30},
        script=[FailForGood(step="ship"), FailForGood(step="hold_funds", compensation=True)],
    )

    assert result.status == "failed"
    assert result.children["pay"].status == "failed"
    assert result.children["pay"].compensated == ["capture"]
    assert result.compensated == []


async def test_a_script_names_a_child_s_step_by_name_or_under_its_node() -> None:
    both = Saga(
        name="both",
        version=1,
        steps=[step("hold_funds"), ChildSaga(name="pay", saga="payment")],
    )
    harness = SagaHarness(both, sagas=[payment])

    everywhere = await harness.run(input={}, script=[Fail(step="hold_funds")])
    child_only = await harness.run(input={}, script=[Fail(step="pay/hold_funds")])

    assert everywhere.attempts["hold_funds"] == 2
    assert everywhere.children["pay"].attempts["hold_funds"] == 2
    assert child_only.attempts["hold_funds"] == 1
    assert child_only.children["pay"].attempts["hold_funds"] == 2


async def test_fail_for_good_on_the_node_answers_for_the_child() -> None:
    harness = SagaHarness(order, sagas=[payment])

    never = await harness.run(input={}, script=[FailForGood(step="pay", type="NoFunds")])
    stuck = await harness.run(
        input={},
        script=[FailForGood(step="ship"), FailForGood(step="pay", compensation=True)],
    )

    assert never.status == "compensated"
    assert never.failure is not None
    assert never.failure.type == "NoFunds"
    assert never.children == {}  # the child never started
    assert stuck.status == "failed"
    assert stuck.children["pay"].status == "completed"  # its undo was never asked of it


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (Fail(step="pay"), "Fail on the child saga node 'pay'"),
        (TimeOut(step="pay"), "TimeOut on the child saga node 'pay'"),
        (Fail(step="pay/nope"), "its steps: reserve_stock, pay, pay/hold_funds, pay/capture"),
        (Fail(step="other/hold_funds"), "does not have"),
    ],
)
async def test_a_script_line_the_children_cannot_take_is_refused(
    line: Fail | TimeOut, says: str
) -> None:
    with pytest.raises(HarnessError) as refused:
        await SagaHarness(order, sagas=[payment]).run(input={}, script=[line])

    assert says in str(refused.value)


async def test_a_child_in_a_map_item_is_keyed_by_the_item() -> None:
    split = Saga(
        name="split",
        version=1,
        steps=[
            Map(name="parts", items="input.parts", steps=[ChildSaga(name="pay", saga="payment")])
        ],
    )

    result = await SagaHarness(split, sagas=[payment]).run(
        input={"parts": [1, 2]}, script=[FailForGood(step="parts[1]/pay/capture")]
    )

    assert result.status == "compensated"
    assert set(result.children) == {"parts[0]/pay", "parts[1]/pay"}
    assert result.children["parts[0]/pay"].compensated == ["capture", "hold_funds"]
    assert result.children["parts[1]/pay"].compensated == ["hold_funds"]
    assert result.compensated == ["parts[0]/pay"]


def test_two_different_definitions_of_one_version_are_refused() -> None:
    again = Saga(name="payment", version=1, steps=[step("charge")])

    with pytest.raises(HarnessError, match="two different definitions of saga 'payment'"):
        SagaHarness(order, sagas=[payment, again])


def test_a_worker_needs_no_handler_for_the_child_node_s_orders() -> None:
    calls: list[str] = []

    SagaHarness(order, recording_worker(calls), sagas=[payment])  # no HarnessError

    with pytest.raises(HarnessError, match="'hold_funds'"):
        SagaHarness(order, Worker("empty"), sagas=[payment])


async def test_the_travel_example_s_card_payment_is_undone_when_a_seat_fails() -> None:
    """examples/travel, as registered: the `card` case runs the child payment saga (its input
    checked against its schema); a failing seat undoes it, newest first, before the bookings."""
    from examples.travel.saga import sagas, travel_saga

    trip = {
        "trip": "T-2",
        "amount": 420,
        "payment": "card",
        "passengers": [{"name": "Ann"}, {"name": "Bob"}],
    }
    harness = SagaHarness(travel_saga, sagas=sagas)

    booked = await harness.run(input=trip)
    failed = await harness.run(input=trip, script=[FailForGood(step="seats[1]/assign_seat")])

    assert booked.status == "completed"
    assert booked.cases == {"pay": "card"}
    assert booked.children["pay_by_card"].path == ["authorize", "capture"]
    assert failed.status == "compensated"
    assert failed.compensated[:2] == ["seats[0]/assign_seat", "pay_by_card"]
    assert set(failed.compensated[2:]) == {"book_flight", "book_hotel", "book_car"}
    assert failed.children["pay_by_card"].compensated == ["capture", "authorize"]
