"""The engine's waits, signals and emitted events, one behaviour per test."""

from __future__ import annotations

from typing import Any

from orchestrator.definitions import (
    Compensation,
    Emit,
    Map,
    Saga,
    Step,
    WaitFor,
)
from orchestrator.engine import (
    Cancel,
    EventReceived,
    FailureType,
    NodeStatus,
    SagaStatus,
    Signal,
    SignalReceived,
    StepStatus,
    Subscription,
    TimerKind,
)
from tests.support.engine import COMPENSATE, FORWARD, ONCE, Run, ok, scheduled, sent, timer, types

ORDER = {"order_id": "A-1", "amount": 30}


def reserve() -> Step:
    return Step(
        name="reserve", pool="stock", retry=ONCE, compensation=Compensation(command="release")
    )


def paid_saga(**wait: Any) -> Saga:
    """reserve -> wait for payment.captured of this order -> ship."""
    options: dict[str, Any] = {
        "event": "payment.captured",
        "correlate": "data.order_id",
        "equals": "input.order_id",
        "timeout_seconds": 60,
    }
    return Saga(
        name="paid",
        version=1,
        steps=[
            reserve(),
            WaitFor(name="payment", **(options | wait)),
            Step(name="ship", pool="shipping", retry=ONCE),
        ],
    )


def captured(order_id: str = "A-1", amount: int = 30) -> dict[str, Any]:
    return {
        "id": "evt-1",
        "source": "payments",
        "type": "payment.captured",
        "data": {"order_id": order_id, "amount": amount},
    }


def test_a_wait_subscribes_with_the_value_its_correlation_must_equal() -> None:
    run = Run(paid_saga(), ORDER)
    run.start(ORDER)
    reached = run.send(ok("reserve"))
    assert reached.subscriptions == (
        Subscription(
            key="payment", event_type="payment.captured", path="data.order_id", value="A-1"
        ),
    )
    assert reached.timers == (scheduled(TimerKind.TIMEOUT, "payment", 1, 60),)
    assert run.instance.nodes["payment"].status is NodeStatus.RUNNING
    assert types(reached)[-1] == "wait_started"
    assert not reached.dispatches


def test_the_event_is_the_wait_result_and_the_saga_goes_on() -> None:
    run = Run(paid_saga(), ORDER)
    run.start(ORDER)
    run.send(ok("reserve"))
    got = run.send(EventReceived(wait="payment", received=captured()))
    assert types(got) == ["event_received", "step_dispatched"]
    assert got.waits_ended == ("payment",)
    assert run.instance.results()["payment"]["data"] == {"order_id": "A-1", "amount": 30}
    assert sent(got) == [("ship", FORWARD, 1)]
    run.send(ok("ship"))
    assert run.status is SagaStatus.COMPLETED


def test_an_event_for_a_wait_that_is_over_is_ignored_and_recorded() -> None:
    run = Run(paid_saga(), ORDER)
    run.start(ORDER)
    run.send(ok("reserve"))
    run.send(EventReceived(wait="payment", received=captured()))
    again = run.send(EventReceived(wait="payment", received=captured()))
    assert types(again) == ["event_ignored"]
    assert not again.dispatches


def test_a_timeout_without_a_path_fails_the_wait_and_compensates() -> None:
    run = Run(paid_saga(), ORDER)
    run.start(ORDER)
    run.send(ok("reserve"))
    out = run.send(timer(TimerKind.TIMEOUT, "payment", 1))
    assert types(out)[:2] == ["wait_timed_out", "node_failed"]
    assert out.waits_ended == ("payment",)
    assert run.status is SagaStatus.COMPENSATING
    assert run.instance.failure is not None
    assert run.instance.failure.type == FailureType.WAIT_TIMED_OUT
    assert sent(out) == [("reserve", COMPENSATE, 1)]
    late = run.send(EventReceived(wait="payment", received=captured()))
    assert types(late) == ["event_ignored"]


def test_a_timeout_with_a_path_runs_it_and_goes_on() -> None:
    saga = paid_saga(on_timeout=[Step(name="remind", pool="mail", retry=ONCE)])
    run = Run(saga, ORDER)
    run.start(ORDER)
    run.send(ok("reserve"))
    out = run.send(timer(TimerKind.TIMEOUT, "payment", 1))
    assert sent(out) == [("remind", FORWARD, 1)]
    out = run.send(ok("remind"))
    assert sent(out) == [("ship", FORWARD, 1)]
    run.send(ok("ship"))
    assert run.status is SagaStatus.COMPLETED
    assert "payment" not in run.instance.results()


def test_a_satisfied_wait_skips_its_timeout_path_and_its_timer_does_nothing() -> None:
    saga = paid_saga(on_timeout=[Step(name="remind", pool="mail", retry=ONCE)])
    run = Run(saga, ORDER)
    run.start(ORDER)
    run.send(ok("reserve"))
    run.send(EventReceived(wait="payment", received=captured()))
    assert run.step_status("remind") is StepStatus.SKIPPED
    assert run.send(timer(TimerKind.TIMEOUT, "payment", 1)).history == ()


def test_a_wait_with_nothing_to_correlate_fails() -> None:
    run = Run(paid_saga(), {"amount": 3})
    run.start({"amount": 3})
    out = run.send(ok("reserve"))
    assert "node_failed" in types(out)
    assert run.instance.failure is not None
    assert run.instance.failure.type == FailureType.NOTHING_TO_CORRELATE


def test_cancel_abandons_the_wait() -> None:
    run = Run(paid_saga(), ORDER)
    run.start(ORDER)
    run.send(ok("reserve"))
    out = run.send(Cancel())
    assert out.waits_ended == ("payment",)
    assert run.instance.nodes["payment"].status is NodeStatus.FAILED


def approval_saga() -> Saga:
    return Saga(
        name="approve",
        version=1,
        steps=[reserve(), WaitFor(name="approval", signal="approved"), Step(name="ship", pool="s")],
    )


def signal(name: str = "approved", id: str = "s-1", data: Any = None) -> SignalReceived:
    return SignalReceived(signal=Signal(name=name, id=id, data=data))


def test_a_signal_satisfies_the_wait_for_it() -> None:
    run = Run(approval_saga(), ORDER)
    run.start(ORDER)
    reached = run.send(ok("reserve"))
    assert reached.subscriptions == ()  # a signal needs no subscription
    out = run.send(signal(data={"by": "ann"}))
    assert types(out) == ["signal_received", "step_dispatched"]
    assert run.instance.results()["approval"] == {
        "name": "approved",
        "id": "s-1",
        "data": {"by": "ann"},
    }


def test_a_signal_sent_early_is_kept_until_the_wait_begins() -> None:
    run = Run(approval_saga(), ORDER)
    run.start(ORDER)
    kept = run.send(signal(id="early"))
    assert types(kept) == ["signal_received"]
    assert [s.id for s in run.instance.signals] == ["early"]
    out = run.send(ok("reserve"))
    assert types(out) == ["step_succeeded", "wait_started", "signal_received", "step_dispatched"]
    assert run.instance.signals == ()
    assert run.instance.results()["approval"]["id"] == "early"


def test_a_signal_to_an_ended_instance_is_ignored() -> None:
    run = Run(approval_saga(), ORDER)
    run.start(ORDER)
    run.send(Cancel())
    run.send(ok("reserve"))
    out = run.send(signal())
    assert types(out) == ["event_ignored"]


def test_waits_inside_a_map_take_their_own_events() -> None:
    saga = Saga(
        name="parcels",
        version=1,
        steps=[
            Map(
                name="parcels",
                items="input.parcels",
                steps=[
                    WaitFor(
                        name="delivered",
                        event="parcel.delivered",
                        correlate="data.parcel",
                        equals="item",
                    )
                ],
            )
        ],
    )
    run = Run(saga, {"parcels": ["p1", "p2"]})
    started = run.start({"parcels": ["p1", "p2"]})
    assert [(s.key, s.value) for s in started.subscriptions] == [
        ("parcels[0]/delivered", "p1"),
        ("parcels[1]/delivered", "p2"),
    ]
    event = {"id": "e2", "type": "parcel.delivered", "data": {"parcel": "p2"}}
    first = run.send(EventReceived(wait="parcels[1]/delivered", received=event))
    assert "saga_completed" not in types(first)
    run.send(EventReceived(wait="parcels[0]/delivered", received=event | {"id": "e1"}))
    assert run.status is SagaStatus.COMPLETED
    assert run.instance.results()["parcels"][1]["delivered"]["id"] == "e2"


def test_events_are_emitted_after_a_step_and_at_the_end() -> None:
    saga = Saga(
        name="emitting",
        version=1,
        steps=[
            Step(
                name="reserve",
                pool="stock",
                emits=[Emit(type="stock.reserved", data={"order": "input.order_id"})],
            )
        ],
        emits=[
            Emit(type="order.completed", on="completed", data={"res": "results.reserve"}),
            Emit(type="order.failed", on="compensated"),
        ],
    )
    run = Run(saga, ORDER)
    run.start(ORDER)
    out = run.send(ok("reserve", result={"n": 2}))
    assert [(e.type, e.data) for e in out.events] == [
        ("stock.reserved", {"order": "A-1"}),
        ("order.completed", {"res": {"n": 2}}),
    ]
    emitted = [h for h in out.history if h.type == "event_emitted"]
    assert [h.data["id"] for h in emitted] == [str(e.id) for e in out.events]
    assert len({e.id for e in out.events}) == 2
