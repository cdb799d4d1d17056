"""The test harness (`workers.testing`): the real engine and the handlers, in memory, with
scripted outcomes and a virtual clock. No servers here; tests/integration/test_example_harness.py
gives handlers a database and tests/e2e/test_harness_agrees.py holds it to the real processes."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from orchestrator.definitions import Compensation, RetryPolicy, Saga, Step
from workers import SagaHarness as ExportedHarness
from workers import StepContext, StepFailed, Worker
from workers.testing import Cancel, Fail, FailForGood, HarnessError, SagaHarness, TimeOut

RETRY = RetryPolicy(max_attempts=3, initial_interval_seconds=2.0, backoff_coefficient=2.0)

trip = Saga(
    name="trip",
    version=1,
    steps=[
        Step(
            name="book_flight",
            pool="travel",
            compensation=Compensation(command="cancel_flight", retry=RETRY),
            retry=RETRY,
            timeout_seconds=30,
        ),
        Step(
            name="book_hotel",
            pool="travel",
            compensation=Compensation(command="cancel_hotel", retry=RETRY),
            retry=RETRY,
        ),
        Step(name="charge_card", pool="payments", retry=RETRY),
    ],
)


def trip_worker(seen: list[StepContext] | None = None) -> Worker:
    """Handlers as a team would write them; `seen` collects every context they get."""
    worker = Worker("trip")

    def handler(command: str, pool: str) -> None:
        async def handle(ctx: StepContext) -> dict[str, Any]:
            if seen is not None:
                seen.append(ctx)
            if command == "charge_card" and ctx.input.get("card") == "declined":
                raise StepFailed("the card was declined", type="CardDeclined")
            if ctx.attempt <= ctx.input.get("crashes", {}).get(command, 0):
                raise ConnectionError(f"{command} is down")
            return {"done": command, "traveller": ctx.input["traveller"]}

        worker.handler(command, pool=pool, transactional=False)(handle)

    for command in ("book_flight", "cancel_flight", "book_hotel", "cancel_hotel"):
        handler(command, "travel")
    handler("charge_card", "payments")
    return worker


ADA = {"traveller": "ada"}


async def test_a_saga_that_succeeds_runs_every_handler_in_order() -> None:
    seen: list[StepContext] = []

    result = await SagaHarness(trip, trip_worker(seen)).run(input=ADA)

    assert result.status == "completed"
    assert result.path == ["book_flight", "book_hotel", "charge_card"]
    assert result.compensated == []
    assert result.results["book_hotel"] == {"done": "book_hotel", "traveller": "ada"}
    assert result.history == [
        "saga_started",
        *["step_dispatched", "step_succeeded"] * 3,
        "saga_completed",
    ]
    assert [event.seq for event in result.events] == list(range(1, 9))
    assert result.elapsed_seconds == 0


async def test_handlers_get_the_context_the_worker_runtime_builds() -> None:
    seen: list[StepContext] = []
    instance_id = UUID("01900000-0000-7000-8000-000000000001")

    await SagaHarness(trip, trip_worker(seen)).run(input=ADA, instance_id=instance_id)

    charge = seen[-1]
    assert (charge.saga, charge.saga_version, charge.step, charge.command) == (
        "trip",
        1,
        "charge_card",
        "charge_card",
    )
    assert (charge.instance_id, charge.correlation_id) == (instance_id, instance_id)
    assert charge.phase == "forward"
    assert charge.attempt == 1
    assert charge.idempotency_key == f"{instance_id}:charge_card:forward"
    assert charge.results == {
        "book_flight": {"done": "book_flight", "traveller": "ada"},
        "book_hotel": {"done": "book_hotel", "traveller": "ada"},
    }
    assert charge.db is None
    assert len({ctx.message_id for ctx in seen}) == len(seen)


async def test_a_handler_raising_step_failed_compensates_newest_first() -> None:
    result = await SagaHarness(trip, trip_worker()).run(input={**ADA, "card": "declined"})

    assert result.status == "compensated"
    assert result.path == ["book_flight", "book_hotel", "charge_card"]
    assert result.compensated == ["book_hotel", "book_flight"]
    assert result.failure is not None
    assert (result.failure.type, result.failure.message) == (
        "CardDeclined",
        "the card was declined",
    )


async def test_a_crashing_handler_is_retried_on_the_virtual_clock() -> None:
    result = await SagaHarness(trip, trip_worker()).run(input={**ADA, "crashes": {"book_hotel": 2}})

    assert result.status == "completed"
    assert result.attempts == {"book_flight": 1, "book_hotel": 3, "charge_card": 1}
    assert result.history.count("attempt_failed") == 2
    assert result.elapsed_seconds == 2.0 + 4.0  # the retry delays, without waiting for them


async def test_scripted_retryable_failures_then_the_handler_runs() -> None:
    seen: list[StepContext] = []

    result = await SagaHarness(trip, trip_worker(seen)).run(
        input=ADA, script=[Fail(step="book_hotel", times=2, type="HotelDown")]
    )

    assert result.status == "completed"
    assert result.attempts["book_hotel"] == 3
    assert [(c.step, c.attempt) for c in seen if c.step == "book_hotel"] == [("book_hotel", 3)]
    failed = [e for e in result.events if e.type == "attempt_failed"]
    assert [e.data["failure"].type for e in failed] == ["HotelDown", "HotelDown"]


async def test_a_step_failing_every_attempt_fails_once_its_retries_run_out() -> None:
    result = await SagaHarness(trip, trip_worker()).run(
        input=ADA, script=[Fail(step="charge_card", times=None)]
    )

    assert result.status == "compensated"
    assert result.attempts["charge_card"] == RETRY.max_attempts
    assert result.compensated == ["book_hotel", "book_flight"]


async def test_fail_for_good_with_a_type_then_after_retries() -> None:
    result = await SagaHarness(trip, trip_worker()).run(
        input=ADA,
        script=[
            Fail(step="book_hotel"),
            FailForGood(step="book_hotel", type="NoRooms", message="full"),
        ],
    )

    assert result.status == "compensated"
    assert result.path == ["book_flight", "book_hotel"]
    assert result.attempts["book_hotel"] == 2
    assert result.compensated == ["book_flight"]
    assert result.failure is not None
    assert (result.failure.type, result.failure.message) == ("NoRooms", "full")


async def test_a_timed_out_attempt_fires_its_timeout_at_once() -> None:
    result = await SagaHarness(trip, trip_worker()).run(
        input=ADA, script=[TimeOut(step="book_flight")]
    )

    assert result.status == "completed"
    assert result.attempts["book_flight"] == 2
    assert "attempt_timed_out" in result.history
    assert result.elapsed_seconds == 30 + 2.0


async def test_a_step_that_always_times_out_is_compensated_as_it_may_have_run() -> None:
    result = await SagaHarness(trip, trip_worker()).run(
        input=ADA, script=[TimeOut(step="book_flight", times=None)]
    )

    assert result.status == "compensated"
    assert result.failure is not None
    assert result.failure.type == "StepTimeout"
    assert result.path == ["book_flight"]
    assert result.elapsed_seconds == 30 * 3 + 2.0 + 4.0


async def test_a_compensation_failing_for_good_leaves_the_saga_failed() -> None:
    result = await SagaHarness(trip, trip_worker()).run(
        input={**ADA, "card": "declined"},
        script=[Fail(step="book_flight", compensation=True, times=None)],
    )

    assert result.status == "failed"
    assert result.compensated == ["book_hotel"]
    assert result.instance.steps["book_flight"].status == "compensation_failed"
    assert result.instance.steps["book_flight"].compensation_attempt == RETRY.max_attempts


async def test_a_compensation_failing_a_few_times_is_retried() -> None:
    result = await SagaHarness(trip, trip_worker()).run(
        input={**ADA, "card": "declined"},
        script=[Fail(step="book_hotel", compensation=True, times=2)],
    )

    assert result.status == "compensated"
    assert result.compensated == ["book_hotel", "book_flight"]
    assert result.instance.steps["book_hotel"].compensation_attempt == 3


async def test_a_compensation_failing_for_good_at_once() -> None:
    result = await SagaHarness(trip, trip_worker()).run(
        input={**ADA, "card": "declined"},
        script=[FailForGood(step="book_hotel", compensation=True, type="Refused")],
    )

    assert result.status == "failed"
    assert result.compensated == []
    assert result.instance.steps["book_hotel"].compensation_attempt == 1


async def test_cancel_once_a_step_succeeded() -> None:
    result = await SagaHarness(trip, trip_worker()).run(
        input=ADA, script=[Cancel(step="book_hotel", reason="changed plans")]
    )

    assert result.status == "compensated"
    # The success that the cancel follows had already sent the next command, which runs.
    assert result.path == ["book_flight", "book_hotel", "charge_card"]
    assert result.compensated == ["book_hotel", "book_flight"]
    assert result.failure is not None
    assert (result.failure.type, result.failure.message) == ("Cancelled", "changed plans")
    cancelled = result.history.index("saga_cancel_requested")
    assert result.history[cancelled - 2 : cancelled] == ["step_succeeded", "step_dispatched"]


async def test_cancel_while_a_step_runs_compensates_it_when_it_succeeds() -> None:
    result = await SagaHarness(trip, trip_worker()).run(
        input=ADA, script=[Cancel(step="book_hotel", at="dispatched")]
    )

    assert result.status == "compensated"
    assert result.compensated == ["book_hotel", "book_flight"]
    assert result.history.index("saga_cancel_requested") < result.history.index(
        "step_succeeded", result.history.index("saga_cancel_requested")
    )


async def test_delays_and_deadlines_run_on_the_virtual_clock() -> None:
    slow = Saga(
        name="slow",
        version=1,
        deadline_seconds=3600,
        steps=[
            Step(name="remind", pool="mail", delay_seconds=600),
            Step(name="wait_for_payment", pool="mail", delay_seconds=86_400),
        ],
    )

    result = await SagaHarness(slow).run(input={})

    assert result.status == "compensated"
    assert result.path == ["remind"]
    assert result.failure is not None
    assert result.failure.type == "DeadlineExceeded"
    assert result.elapsed_seconds == 3600
    assert "saga_deadline_exceeded" in result.history


async def test_without_a_worker_every_step_succeeds_empty() -> None:
    result = await SagaHarness(trip).run(input=None)

    assert result.status == "completed"
    assert result.results == {"book_flight": {}, "book_hotel": {}, "charge_card": {}}


async def test_a_transactional_handler_without_a_database_says_what_to_pass() -> None:
    worker = Worker("needs_db")

    @worker.handler("book_flight", pool="travel")
    async def book_flight(ctx: StepContext) -> None:
        await ctx.session.commit()

    for command, pool in [
        ("cancel_flight", "travel"),
        ("book_hotel", "travel"),
        ("cancel_hotel", "travel"),
        ("charge_card", "payments"),
    ]:
        worker.handler(command, pool=pool)(book_flight)

    with pytest.raises(HarnessError, match="pass database_url= to SagaHarness"):
        await SagaHarness(trip, worker).run(input=ADA)


async def test_a_non_transactional_handler_using_the_session_is_told_why() -> None:
    worker = trip_worker()

    @worker.handler("book_flight", pool="elsewhere", transactional=False)
    async def unused(ctx: StepContext) -> None:  # only here to keep the app's shape
        await ctx.session.commit()

    saga = Saga(name="one", version=1, steps=[Step(name="book_flight", pool="elsewhere")])
    with pytest.raises(HarnessError, match="registered with transactional=False"):
        await SagaHarness(saga, worker).run(input=ADA)


def test_a_missing_handler_is_named_before_anything_runs() -> None:
    worker = Worker("partial")

    @worker.handler("book_flight", pool="travel", transactional=False)
    async def book_flight(ctx: StepContext) -> None:
        return None

    with pytest.raises(HarnessError, match=r"'cancel_flight'.*no handler in worker app 'partial'"):
        SagaHarness(trip, worker)


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (Fail(step="book_car"), "'book_car', which saga 'trip' does not have"),
        (Fail(step="charge_card", compensation=True), "'charge_card', which has none"),
        (TimeOut(step="book_hotel"), "no timeout_seconds"),
        (Fail(step="book_hotel", times=0), "times must be 1 or more"),
        (Cancel(step="book_car"), "'book_car'"),
    ],
)
async def test_a_script_that_cannot_apply_is_refused(line: Any, complaint: str) -> None:
    with pytest.raises(HarnessError, match=complaint):
        await SagaHarness(trip, trip_worker()).run(input=ADA, script=[line])


def test_the_harness_is_exported_from_workers() -> None:
    assert ExportedHarness is SagaHarness
