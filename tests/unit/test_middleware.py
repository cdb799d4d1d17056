"""Middleware chains: the onion order, a refusal, exceptions, registration, and a user's
middleware running in the test harness as in a worker. The real worker: tests/e2e/test_middleware.py."""

from __future__ import annotations

import contextvars
import dataclasses
from typing import Any
from uuid import uuid4

import pytest

from orchestrator.definitions import Compensation, Saga, Step
from orchestrator.messaging.envelope import Phase
from orchestrator.observability.middleware import compose
from workers import (
    HandlerCall,
    HandlerError,
    HandlerOutcome,
    Middleware,
    NextHandler,
    StepContext,
    StepFailed,
    Worker,
)
from workers.runtime import handler_chain, run_handler
from workers.testing import SagaHarness


class Recorder:
    """A middleware that notes when it is entered and left, and what it saw come back."""

    def __init__(self, name: str, seen: list[str]) -> None:
        self.name, self.seen = name, seen

    async def __call__(self, call: HandlerCall, next: NextHandler) -> HandlerOutcome:
        self.seen.append(f"{self.name} in")
        try:
            outcome = await next(call)
        except Exception as exc:
            self.seen.append(f"{self.name} saw {type(exc).__name__}")
            raise
        self.seen.append(f"{self.name} out: {outcome.label}")
        return outcome


def _ctx(**changes: Any) -> StepContext:
    ctx = StepContext(
        instance_id=uuid4(),
        saga="order",
        saga_version=1,
        step="charge",
        command="charge",
        phase=Phase.FORWARD,
        attempt=1,
        input={"amount": 5},
        results={},
        idempotency_key="k",
        message_id=uuid4(),
        correlation_id=uuid4(),
        db=None,
    )
    return dataclasses.replace(ctx, **changes)


async def _run(worker: Worker, command: str = "charge", **ctx: Any) -> HandlerOutcome:
    spec = worker.lookup("payments", command)
    assert spec is not None
    call = HandlerCall(ctx=_ctx(command=command, **ctx), pool="payments", handler=spec.fn)
    return await handler_chain(worker)(call)


async def test_compose_wraps_the_handling_outermost_first() -> None:
    seen: list[str] = []

    async def handle(call: str) -> str:
        seen.append(f"handle {call}")
        return call.upper()

    async def a(call: str, next: Any) -> str:
        seen.append("a in")
        out: str = await next(call + "+a")
        seen.append("a out")
        return out + "!"

    async def b(call: str, next: Any) -> str:
        seen.append("b in")
        out: str = await next(call + "+b")
        seen.append("b out")
        return out

    assert await compose([a, b], handle)("x") == "X+A+B!"
    assert seen == ["a in", "b in", "handle x+a+b", "b out", "a out"]
    assert compose([], handle) is handle


async def test_middlewares_run_in_registration_order_around_the_handler() -> None:
    seen: list[str] = []
    worker = Worker(middleware=[Recorder("outer", seen)])
    worker.middleware(Recorder("inner", seen))

    @worker.handler("charge", pool="payments")
    async def charge(ctx: StepContext) -> dict[str, int]:
        seen.append("handler")
        return {"charged": ctx.input["amount"]}

    outcome = await _run(worker)

    assert outcome == HandlerOutcome(result={"charged": 5})
    assert seen == [
        "outer in",
        "inner in",
        "handler",
        "inner out: succeeded",
        "outer out: succeeded",
    ]


async def test_a_middleware_refuses_without_running_the_handler() -> None:
    seen: list[str] = []
    worker = Worker(middleware=[Recorder("outer", seen)])

    @worker.middleware
    async def limit(call: HandlerCall, next: NextHandler) -> HandlerOutcome:
        if call.ctx.input["amount"] > 100:
            raise StepFailed("over the tenant's limit", type="LimitExceeded")
        return await next(call)

    @worker.handler("charge", pool="payments")
    async def charge(ctx: StepContext) -> None:
        seen.append("handler")

    outcome = await _run(worker, input={"amount": 500})

    assert outcome.failure is not None
    assert (outcome.failure.type, outcome.failure.retryable) == ("LimitExceeded", False)
    assert outcome.label == "failed_for_good"
    assert isinstance(outcome.exception, StepFailed)
    assert seen == ["outer in", "outer saw StepFailed"]  # outside, the refusal propagates


async def test_a_handlers_exception_comes_back_as_a_failed_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    worker = Worker(middleware=[Recorder("outer", seen)])

    @worker.handler("charge", pool="payments")
    async def charge(ctx: StepContext) -> None:
        raise ConnectionError("card network down")

    outcome = await _run(worker)

    assert seen == ["outer in", "outer out: failed"]
    assert outcome.failure is not None
    assert (outcome.failure.type, outcome.failure.retryable) == ("ConnectionError", True)
    assert isinstance(outcome.exception, ConnectionError)
    assert "handler for charge failed (attempt 1)" in caplog.text


async def test_a_middlewares_own_error_fails_the_call_and_propagates_outward() -> None:
    seen: list[str] = []
    ran: list[str] = []

    async def broken(call: HandlerCall, next: NextHandler) -> HandlerOutcome:
        raise KeyError("tenant")

    worker = Worker(middleware=[Recorder("outer", seen), broken])

    @worker.handler("charge", pool="payments")
    async def charge(ctx: StepContext) -> None:
        ran.append("handler")

    spec = worker.lookup("payments", "charge")
    assert spec is not None
    payload = await run_handler(spec, _ctx(), "payments", handler_chain(worker))

    assert seen == ["outer in", "outer saw KeyError"]
    assert ran == []
    assert payload.failure is not None
    assert (payload.ok, payload.failure.type, payload.failure.retryable) == (
        False,
        "KeyError",
        True,
    )


async def test_a_middleware_adds_context_for_the_handler() -> None:
    tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant")

    async def tenancy(call: HandlerCall, next: NextHandler) -> HandlerOutcome:
        token = tenant.set(call.ctx.input["tenant"])
        try:
            # A changed call reaches the handler too.
            return await next(call.evolve(ctx=dataclasses.replace(call.ctx, attempt=7)))
        finally:
            tenant.reset(token)

    worker = Worker(middleware=[tenancy])

    @worker.handler("charge", pool="payments")
    async def charge(ctx: StepContext) -> dict[str, Any]:
        return {"tenant": tenant.get(), "attempt": ctx.attempt}

    outcome = await _run(worker, input={"tenant": "acme"})

    assert outcome.result == {"tenant": "acme", "attempt": 7}


async def test_a_middleware_may_answer_in_the_handlers_place() -> None:
    async def cached(call: HandlerCall, next: NextHandler) -> HandlerOutcome:
        return HandlerOutcome.succeeded({"cached": True})

    worker = Worker(middleware=[cached])

    @worker.handler("charge", pool="payments")
    async def charge(ctx: StepContext) -> None:
        raise AssertionError("not called")

    assert (await _run(worker)).result == {"cached": True}


def test_a_plain_def_middleware_is_refused_when_registered() -> None:
    def sync(call: HandlerCall, next: NextHandler) -> HandlerOutcome:
        raise AssertionError("never called")

    with pytest.raises(HandlerError, match="not async"):
        Worker(middleware=[sync])  # type: ignore[list-item]
    worker = Worker()
    with pytest.raises(HandlerError, match="async def"):
        worker.middleware(sync)  # type: ignore[type-var]


def test_middleware_objects_satisfy_the_protocol() -> None:
    middleware: Middleware = Recorder("typed", [])
    assert Worker(middleware=[middleware]).middlewares == [middleware]


# ---- in the test harness ------------------------------------------------------------------------

shop = Saga(
    name="shop",
    version=1,
    steps=[
        Step(name="reserve", pool="stock", compensation=Compensation(command="release")),
        Step(name="charge", pool="payments"),
    ],
)


async def test_the_harness_runs_the_apps_middlewares() -> None:
    calls: list[str] = []
    worker = Worker()

    @worker.middleware
    async def count(call: HandlerCall, next: NextHandler) -> HandlerOutcome:
        calls.append(call.ctx.command)
        return await next(call)

    @worker.middleware
    async def refuse_big_charges(call: HandlerCall, next: NextHandler) -> HandlerOutcome:
        if call.ctx.command == "charge" and call.ctx.input["amount"] > 100:
            raise StepFailed("over the limit", type="LimitExceeded")
        return await next(call)

    @worker.handler("reserve", pool="stock", transactional=False)
    @worker.handler("release", pool="stock", transactional=False)
    @worker.handler("charge", pool="payments", transactional=False)
    async def ok(ctx: StepContext) -> dict[str, str]:
        return {"done": ctx.command}

    harness = SagaHarness(shop, worker)
    small = await harness.run(input={"amount": 5})
    big = await harness.run(input={"amount": 500})

    assert small.status == "completed"
    assert big.status == "compensated"
    assert big.failure is not None
    assert big.failure.type == "LimitExceeded"
    assert big.compensated == ["reserve"]
    assert calls == ["reserve", "charge", "reserve", "charge", "release"]
