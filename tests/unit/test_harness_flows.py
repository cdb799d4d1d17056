"""The test harness runs flows: parallel branches, choices, maps and input maps, with scripts
that name a step in every map item or in one. (Linear sagas: tests/unit/test_harness.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import Case, Choice, Compensation, Map, Parallel, Saga, Step, field
from workers import StepContext, Worker
from workers.testing import Cancel, Fail, FailForGood, HarnessError, SagaHarness


def step(name: str, **extra: Any) -> Step:
    """A step undone by ``undo_<name>``."""
    return Step(
        name=name, pool="travel", compensation=Compensation(command=f"undo_{name}"), **extra
    )


def echo_worker(saga: Saga, seen: list[StepContext] | None = None) -> Worker:
    """A handler for every command of `saga` that returns what it was given."""
    worker = Worker("echo")

    async def echo(ctx: StepContext) -> dict[str, Any]:
        if seen is not None:
            seen.append(ctx)
        return {"step": ctx.step, "input": ctx.input}

    for task in saga.tasks:
        assert isinstance(task, Step)
        worker.handler(task.command_name, pool=task.pool, transactional=False)(echo)
        if task.compensation is not None:
            worker.handler(task.compensation.command, pool=task.pool, transactional=False)(echo)
    return worker


trip = Saga(
    name="trip",
    version=1,
    steps=[
        step("hold_budget"),
        Parallel(
            name="book",
            branches=[[step("book_flight"), step("pick_seat")], [step("book_hotel")]],
        ),
        step("confirm"),
    ],
)


async def test_parallel_branches_run_at_once_and_the_saga_waits_for_all() -> None:
    result = await SagaHarness(trip, echo_worker(trip)).run(input={})

    assert result.status == "completed"
    # Both branches start together; pick_seat follows book_flight; confirm waits for both.
    assert result.path == ["hold_budget", "book_flight", "book_hotel", "pick_seat", "confirm"]
    assert set(result.results) == {
        "hold_budget",
        "book_flight",
        "pick_seat",
        "book_hotel",
        "confirm",
    }
    assert "branches_started" in result.history


async def test_a_failure_in_a_branch_waits_for_the_other_and_undoes_newest_first() -> None:
    """book_flight fails while book_hotel is in flight: the hotel is waited for, pick_seat never
    starts, and the hotel is undone before the budget."""
    result = await SagaHarness(trip, echo_worker(trip)).run(
        input={}, script=[FailForGood(step="book_flight")]
    )

    assert result.status == "compensated"
    assert result.path == ["hold_budget", "book_flight", "book_hotel"]
    assert result.compensated == ["book_hotel", "hold_budget"]
    assert result.instance.steps["pick_seat"].status == "pending"


async def test_compensation_is_newest_first_across_branches() -> None:
    """Completed: hold_budget, book_flight, book_hotel, pick_seat; then confirm fails."""
    result = await SagaHarness(trip, echo_worker(trip)).run(
        input={}, script=[FailForGood(step="confirm")]
    )

    assert result.status == "compensated"
    assert result.instance.completed == ("hold_budget", "book_flight", "book_hotel", "pick_seat")
    assert result.compensated == ["pick_seat", "book_hotel", "book_flight", "hold_budget"]


payment = Saga(
    name="payment",
    version=1,
    steps=[
        Choice(
            name="how",
            cases=[
                Case(name="card", when=field("input.method") == "card", steps=[step("charge")]),
                Case(
                    name="wire",
                    when=field("input.method").is_in(["iban", "swift"])
                    & field("input.iban").exists(),
                    steps=[step("send_invoice"), step("await_transfer")],
                ),
            ],
            default=[step("manual_review")],
        ),
        step("receipt"),
    ],
)


@pytest.mark.parametrize(
    ("given", "case", "path"),
    [
        ({"method": "card"}, "card", ["charge", "receipt"]),
        ({"method": "iban", "iban": "FR76"}, "wire", ["send_invoice", "await_transfer", "receipt"]),
        ({"method": "iban"}, "default", ["manual_review", "receipt"]),
    ],
)
async def test_a_choice_runs_the_first_case_that_holds_else_its_default(
    given: dict[str, Any], case: str, path: list[str]
) -> None:
    result = await SagaHarness(payment, echo_worker(payment)).run(input=given)

    assert result.status == "completed"
    assert result.cases == {"how": case}
    assert result.path == path
    chosen = next(event for event in result.events if event.type == "case_chosen")
    assert chosen.step == "how"
    assert chosen.data["case"] == case


async def test_a_choice_with_no_case_and_no_default_fails_and_compensates() -> None:
    strict = Saga(
        name="strict",
        version=1,
        steps=[
            step("hold"),
            Choice(
                name="how",
                cases=[
                    Case(name="card", when=field("input.method") == "card", steps=[step("pay")])
                ],
            ),
        ],
    )

    result = await SagaHarness(strict, echo_worker(strict)).run(input={"method": "cash"})

    assert result.status == "compensated"
    assert result.failure is not None
    assert result.failure.type == "NoCaseMatched"
    assert result.cases == {}
    assert result.compensated == ["hold"]


seats = Saga(
    name="seats",
    version=1,
    steps=[
        step("hold_flight"),
        Map(
            name="seats",
            items="input.passengers",
            max_concurrency=1,
            steps=[
                step("assign_seat"),
                step("notify", input_map={"who": "item.name", "seat": "index"}),
            ],
        ),
    ],
)
THREE = {"passengers": [{"name": "ada"}, {"name": "bob"}, {"name": "cy"}]}


async def test_a_map_runs_its_steps_once_per_item_in_order() -> None:
    seen: list[StepContext] = []

    result = await SagaHarness(seats, echo_worker(seats, seen)).run(input=THREE)

    assert result.status == "completed"
    assert result.path == [
        "hold_flight",
        *(f"seats[{i}]/{name}" for i in range(3) for name in ("assign_seat", "notify")),
    ]
    assert [item["assign_seat"]["input"] for item in result.results["seats"]] == THREE["passengers"]
    assert result.attempts["seats[2]/notify"] == 1
    # Inside an item a command gets the item; with an input map, the mapped dict and no results.
    assign = next(ctx for ctx in seen if ctx.step == "seats[1]/assign_seat")
    notify = next(ctx for ctx in seen if ctx.step == "seats[1]/notify")
    assert assign.input == {"name": "bob"}
    assert "hold_flight" in assign.results
    assert notify.input == {"who": "bob", "seat": 1}
    assert notify.results == {}


async def test_a_step_s_name_scripts_every_item_and_its_key_scripts_one() -> None:
    result = await SagaHarness(seats, echo_worker(seats)).run(
        input=THREE,
        script=[Fail(step="assign_seat"), Fail(step="seats[1]/assign_seat")],
    )

    # Every item fails once; item 1 once more (the default policy allows 3 attempts).
    assert result.status == "completed"
    assert [result.attempts[f"seats[{i}]/assign_seat"] for i in range(3)] == [2, 3, 2]


async def test_a_failed_item_undoes_the_items_before_it_and_starts_no_more() -> None:
    result = await SagaHarness(seats, echo_worker(seats)).run(
        input=THREE, script=[FailForGood(step="seats[1]/notify")]
    )

    assert result.status == "compensated"
    assert "seats[2]/assign_seat" not in result.path
    assert result.compensated == [
        "seats[1]/assign_seat",
        "seats[0]/notify",
        "seats[0]/assign_seat",
        "hold_flight",
    ]


async def test_a_cancel_can_name_a_step_in_a_map_item() -> None:
    result = await SagaHarness(seats, echo_worker(seats)).run(
        input=THREE, script=[Cancel(step="seats[0]/notify")]
    )

    assert result.status == "compensated"
    assert result.failure is not None
    assert result.failure.type == "Cancelled"
    # The cancel came after item 0: item 1's first step was out, and is undone too.
    assert result.compensated[-3:] == ["seats[0]/notify", "seats[0]/assign_seat", "hold_flight"]
    assert "seats[2]/assign_seat" not in result.path


@pytest.mark.parametrize(
    ("named", "listed"),
    [
        ("nope", "its steps: hold_flight, seats[i]/assign_seat, seats[i]/notify"),
        ("seats[x]/notify", "'seats[x]/notify'"),
        ("seats[01]/notify", "'seats[01]/notify'"),
        ("other[0]/notify", "'other[0]/notify'"),
        ("seats[0]/hold_flight", "'seats[0]/hold_flight'"),
        ("seats[0]/nope", "'seats[0]/nope'"),
    ],
)
async def test_a_script_naming_no_step_of_the_saga_is_refused(named: str, listed: str) -> None:
    with pytest.raises(HarnessError, match="does not have") as refused:
        await SagaHarness(seats).run(input=THREE, script=[Fail(step=named)])

    assert listed in str(refused.value)
