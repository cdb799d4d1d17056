"""The test harness runs waits and emits: script lines send events and signals at a moment of
the run, waits take them as the shell matches them, timeouts fire on the virtual clock, and the
result lists the events the sagas published."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import ChildSaga, Compensation, Emit, Saga, Step, WaitFor
from workers.testing import HarnessError, SagaHarness, SendEvent, SendSignal

ORDER = {"order_id": "A-1"}


def paid(**wait: Any) -> Saga:
    """reserve -> wait for payment.captured of this order -> ship."""
    options: dict[str, Any] = {
        "event": "payment.captured",
        "correlate": "data.order_id",
        "equals": "input.order_id",
    }
    return Saga(
        name="paid",
        version=1,
        steps=[
            Step(name="reserve", pool="shop", compensation=Compensation(command="release")),
            WaitFor(name="payment", **(options | wait)),
            Step(name="ship", pool="shop"),
        ],
        emits=[Emit(type="order.shipped", on="completed", data={"order": "input.order_id"})],
    )


def captured(order_id: str = "A-1", **when: Any) -> SendEvent:
    return SendEvent(type="payment.captured", data={"order_id": order_id, "amount": 30}, **when)


@pytest.mark.parametrize(
    "when",
    [
        {},  # before the instance starts: kept until the wait begins
        {"step": "reserve", "at": "dispatched"},  # before it reaches the wait
        {"when_waiting": "payment"},  # as soon as the wait began
        {"step": "reserve"},  # after: the wait began with reserve's success
    ],
    ids=["before-start", "before-the-wait", "when-waiting", "after-the-wait-began"],
)
async def test_a_wait_takes_the_event_whenever_it_was_sent(when: dict[str, Any]) -> None:
    result = await SagaHarness(paid()).run(input=ORDER, script=[captured(**when)])

    assert result.status == "completed"
    assert result.path == ["reserve", "ship"]
    assert result.received["payment"]["data"] == {"order_id": "A-1", "amount": 30}
    assert result.results["payment"]["id"] == "event-1"
    assert result.history.count("event_received") == 1


async def test_an_event_for_another_order_is_not_taken() -> None:
    harness = SagaHarness(paid(timeout_seconds=60))

    result = await harness.run(input=ORDER, script=[captured("B-2"), captured("A-1", id="mine")])

    assert result.received["payment"]["id"] == "mine"


async def test_an_event_sent_twice_reaches_the_instance_once() -> None:
    saga = Saga(
        name="twice",
        version=1,
        steps=[WaitFor(name="first", event="ping"), WaitFor(name="second", event="ping")],
    )
    same = SendEvent(type="ping", id="p-1")

    with pytest.raises(HarnessError, match="wait 'second' waits for event 'ping'"):
        await SagaHarness(saga).run(input={}, script=[same, same])


async def test_a_signal_satisfies_its_wait() -> None:
    saga = Saga(
        name="approve",
        version=1,
        steps=[WaitFor(name="approval", signal="approved"), Step(name="ship", pool="shop")],
    )

    result = await SagaHarness(saga).run(
        input={}, script=[SendSignal(name="approved", data={"by": "ann"})]
    )

    assert result.status == "completed"
    assert result.received["approval"] == {
        "name": "approved",
        "id": "signal-1",
        "data": {"by": "ann"},
    }


async def test_a_wait_that_times_out_compensates() -> None:
    result = await SagaHarness(paid(timeout_seconds=3600)).run(input=ORDER)

    assert result.status == "compensated"
    assert result.failure is not None
    assert result.failure.type == "WaitTimedOut"
    assert result.compensated == ["reserve"]
    assert result.elapsed_seconds == 3600
    assert result.emitted == []  # order.shipped is for a completed order only


async def test_a_timeout_with_a_path_runs_it_and_goes_on() -> None:
    saga = paid(timeout_seconds=60, on_timeout=[Step(name="remind", pool="mail")])

    result = await SagaHarness(saga).run(input=ORDER)

    assert result.status == "completed"
    assert result.path == ["reserve", "remind", "ship"]
    assert "payment" not in result.received


async def test_an_event_sent_after_the_timeout_comes_too_late() -> None:
    saga = paid(timeout_seconds=60, on_timeout=[Step(name="remind", pool="mail")])

    result = await SagaHarness(saga).run(input=ORDER, script=[captured(step="remind")])

    assert result.path == ["reserve", "remind", "ship"]
    assert result.received == {}


async def test_the_result_lists_the_events_the_sagas_emitted() -> None:
    payment = Saga(
        name="payment",
        version=1,
        steps=[
            Step(
                name="capture",
                pool="pay",
                emits=[Emit(type="payment.captured", data={"order_id": "input.order_id"})],
            )
        ],
    )
    order = Saga(
        name="order",
        version=1,
        steps=[
            ChildSaga(name="pay", saga="payment", input_map={"order_id": "input.order_id"}),
            *paid().steps,
        ],
        emits=paid().emits,
    )

    # The child's event is published, and the parent's wait takes it from the wire.
    result = await SagaHarness(order, sagas=[payment]).run(input=ORDER)

    assert result.status == "completed"
    assert [(e.type, e.data, e.child) for e in result.emitted] == [
        ("payment.captured", {"order_id": "A-1"}, "pay"),
        ("order.shipped", {"order": "A-1"}, None),
    ]
    assert result.emitted[0].instance_id == result.children["pay"].instance_id
    assert result.received["payment"]["source"] == "warren/sagas/payment"
    assert [e.type for e in result.children["pay"].emitted] == ["payment.captured"]


async def test_events_reach_a_child_sagas_wait() -> None:
    payment = Saga(
        name="payment",
        version=1,
        steps=[WaitFor(name="approval", signal="approved"), paid().steps[1]],
    )
    order = Saga(name="order", version=1, steps=[ChildSaga(name="pay", saga="payment")])

    result = await SagaHarness(order, sagas=[payment]).run(
        input=ORDER,
        script=[captured(), SendSignal(name="approved", when_waiting="pay/approval")],
    )

    assert result.status == "completed"
    assert result.children["pay"].received["payment"]["data"]["order_id"] == "A-1"


async def test_a_wait_nothing_will_end_stops_the_run_and_says_how_to_send_it() -> None:
    with pytest.raises(HarnessError) as raised:
        await SagaHarness(paid()).run(input=ORDER, script=[captured("B-2")])

    assert str(raised.value) == (
        "saga 'paid' can go no further: wait 'payment' waits for event 'payment.captured' "
        "whose data.order_id equals 'A-1': add SendEvent(type='payment.captured', "
        "data={'order_id': 'A-1'}, when_waiting='payment') to the script, or give the wait a "
        "timeout_seconds"
    )


async def test_a_stuck_signal_wait_names_the_line_to_add() -> None:
    saga = Saga(name="approve", version=1, steps=[WaitFor(name="approval", signal="approved")])

    with pytest.raises(HarnessError, match=r"SendSignal\(name='approved', when_waiting='approval'"):
        await SagaHarness(saga).run(input={})


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (SendEvent(type="x", when_waiting="nowhere"), "wait 'nowhere', which saga 'paid'"),
        (SendEvent(type="x", step="nothing"), "step 'nothing'"),
        (SendSignal(name="s", step="reserve", when_waiting="payment"), "both when_waiting"),
        (SendEvent(type="Not A Type"), "does not look like an event type"),
    ],
)
async def test_a_send_line_that_cannot_apply_is_refused(line: Any, says: str) -> None:
    with pytest.raises(HarnessError, match=says):
        await SagaHarness(paid()).run(input=ORDER, script=[line])


async def test_the_stuck_wait_error_names_the_lines_whose_moment_never_came() -> None:
    with pytest.raises(HarnessError, match=r"never sent.*SendEvent\(type='payment.captured'"):
        await SagaHarness(paid()).run(input=ORDER, script=[captured(step="ship")])
