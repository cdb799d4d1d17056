"""The handler API: what `Worker.handler` accepts and refuses."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from orchestrator.definitions import ChildSaga, Saga, Step
from workers import HandlerError, StepContext, Worker
from workers.check import check, missing_message


async def _charge(ctx: StepContext, *, currency: str) -> dict[str, Any]:
    return {"currency": currency}


class _Refunder:
    async def __call__(self, ctx: StepContext) -> None:
        return None

    async def method(self, ctx: StepContext) -> None:
        return None


def test_a_plain_def_handler_is_refused_with_what_to_do() -> None:
    worker = Worker("billing")

    def charge(ctx: StepContext) -> dict[str, Any]:
        return {}

    with pytest.raises(HandlerError) as refused:
        worker.handler("charge", pool="payments")(charge)  # type: ignore[arg-type]

    message = refused.value.message
    assert "'charge' on pool 'payments'" in message
    assert "test_a_plain_def_handler_is_refused_with_what_to_do.<locals>.charge" in message
    assert "async def" in message
    assert "asyncio.to_thread" in message
    assert isinstance(refused.value, TypeError)
    assert worker.lookup("payments", "charge") is None


def test_partials_callable_objects_and_bound_methods_of_async_code_are_accepted() -> None:
    worker = Worker("billing")
    refunder = _Refunder()

    worker.handler("charge", pool="payments")(functools.partial(_charge, currency="EUR"))
    worker.handler("refund", pool="payments")(refunder)
    worker.handler("void", pool="payments")(refunder.method)
    worker.handler("again", pool="payments")(functools.partial(functools.partial(refunder)))

    assert [worker.lookup("payments", c) is not None for c in ("charge", "refund", "void")] == [
        True,
        True,
        True,
    ]


def test_a_sync_callable_object_or_a_non_callable_is_refused() -> None:
    class Sync:
        def __call__(self, ctx: StepContext) -> None:
            return None

    worker = Worker()
    for target in (Sync(), functools.partial(print), 42):
        with pytest.raises(HandlerError, match="async def"):
            worker.handler("x", pool="p")(target)  # type: ignore[arg-type]


def test_the_check_keeps_to_the_pools_given_and_points_at_a_pool_typo() -> None:
    worker = Worker("billing")

    @worker.handler("charge", pool="payment")
    async def charge(ctx: StepContext) -> None:
        return None

    saga = Saga(
        name="pay",
        version=1,
        steps=[Step(name="charge", pool="payments"), Step(name="ship", pool="shipping")],
    )

    everything = check([saga], worker)
    payments_only = check([saga], worker, pools=["payments"])

    assert [(c.command, c.pool, c.handled, c.handled_on) for c in everything.commands] == [
        ("charge", "payments", False, ["payment"]),
        ("ship", "shipping", False, []),
    ]
    assert [(u.pool, u.command) for u in everything.unused] == [("payment", "charge")]
    assert [c.command for c in payments_only.missing] == ["charge"]
    assert payments_only.unused == []
    assert "(it has one on pool(s) payment: is the pool name right?)" in missing_message(
        payments_only.missing[0], "billing"
    )


def test_the_check_leaves_child_sagas_to_the_orchestrators() -> None:
    worker = Worker("trips")

    @worker.handler("book", pool="bookings")
    async def book(ctx: StepContext) -> None:
        return None

    saga = Saga(
        name="trip",
        version=1,
        steps=[Step(name="book", pool="bookings"), ChildSaga(name="pay", saga="payment")],
    )

    report = check([saga], worker)

    assert [(c.command, c.handled) for c in report.commands] == [("book", True)]
    assert report.missing == []
