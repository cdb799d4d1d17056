"""The engine's flows: parallels, choices, maps and child sagas, one behaviour per test."""

from __future__ import annotations

from typing import Any

from orchestrator.definitions import (
    CHILD_POOL,
    Case,
    ChildSaga,
    Choice,
    Compensation,
    Map,
    Node,
    Parallel,
    RetryPolicy,
    Saga,
    Step,
    field,
)
from orchestrator.definitions.model import CANCEL_CHILD_COMMAND
from orchestrator.engine import (
    Cancel,
    Failure,
    FailureType,
    SagaStatus,
    StepReply,
    StepStatus,
    TimerKind,
)
from tests.support.engine import (
    COMPENSATE,
    FORWARD,
    ONCE,
    Run,
    fail,
    ok,
    sent,
    timer,
    types,
)


def step(name: str, *, undo: bool = True, **options: Any) -> Step:
    """A step on pool p that fails for good at its first failure, undone by undo_<name>."""
    options.setdefault("retry", ONCE)
    compensation = Compensation(command=f"undo_{name}") if undo else None
    return Step(name=name, pool="p", compensation=compensation, **options)


def saga(*nodes: Node, **options: Any) -> Saga:
    return Saga(name="flow", version=1, steps=nodes, **options)


def started(run: Run) -> Run:
    run.start()
    return run


def undone(run: Run) -> list[str]:
    """The steps whose compensation was dispatched, in order (first attempts)."""
    return [d.step for d in run.dispatches if d.phase is COMPENSATE and d.attempt == 1]


def compensate_all(run: Run) -> None:
    """Answer every compensation, one at a time, until the saga is compensated."""
    for _ in range(20):
        pending = [k for k, s in run.instance.steps.items() if s.status is StepStatus.COMPENSATING]
        if not pending:
            break
        (key,) = pending  # one at a time
        run.send(ok(key, run.instance.steps[key].compensation_attempt, COMPENSATE))
    assert run.status is SagaStatus.COMPENSATED


def child_failed(key: str, attempt: int = 1) -> StepReply:
    failure = Failure(type=FailureType.CHILD_FAILED, message="kid compensated", retryable=False)
    return StepReply(step=key, phase=FORWARD, attempt=attempt, ok=False, failure=failure)


# ---- parallel -------------------------------------------------------------------------------


def test_a_parallel_starts_its_branches_at_once_and_joins_them() -> None:
    run = Run(
        saga(Parallel(name="both", branches=[[step("a")], [step("b"), step("c")]]), step("d"))
    )

    t = run.start()

    assert types(t) == ["saga_started", "branches_started", "step_dispatched", "step_dispatched"]
    assert t.history[1].data == {"branches": 2}
    assert sent(t) == [("a", FORWARD, 1), ("b", FORWARD, 1)]
    assert sent(run.send(ok("b"))) == [("c", FORWARD, 1)]  # b's branch goes on alone
    assert run.send(ok("a")).dispatches == ()
    t = run.send(ok("c"))  # the last branch ends: the parallel succeeds, d follows
    assert types(t) == ["step_succeeded", "node_succeeded", "step_dispatched"]
    assert sent(t) == [("d", FORWARD, 1)]
    run.send(ok("d"))
    assert run.status is SagaStatus.COMPLETED
    assert run.instance.completed == ("b", "a", "c", "d")


def test_max_concurrency_limits_the_unfinished_branches() -> None:
    branches = [[step("a"), step("a2")], [step("b")], [step("c")]]
    run = Run(saga(Parallel(name="some", branches=branches, max_concurrency=2)))

    assert sent(run.start()) == [("a", FORWARD, 1), ("b", FORWARD, 1)]
    # a's branch is not finished when a succeeds: c still waits
    assert sent(run.send(ok("a"))) == [("a2", FORWARD, 1)]
    assert sent(run.send(ok("b"))) == [("c", FORWARD, 1)]
    assert run.instance.nodes["some"].started == 3


def test_max_concurrency_limits_the_unfinished_items_of_a_map() -> None:
    mapped = Map(name="seats", items="input", steps=[step("book")], max_concurrency=1)
    run = Run(saga(mapped), ["x", "y", "z"])

    assert sent(run.start()) == [("seats[0]/book", FORWARD, 1)]
    assert sent(run.send(ok("seats[0]/book"))) == [("seats[1]/book", FORWARD, 1)]
    assert sent(run.send(ok("seats[1]/book"))) == [("seats[2]/book", FORWARD, 1)]


def failing_branches() -> Saga:
    """a then a2 | b then b2 | c (retried after 5 s): a2 fails for good."""
    slow_retry = RetryPolicy(max_attempts=3, initial_interval_seconds=5)
    return saga(
        Parallel(
            name="trip",
            branches=[
                [step("a"), step("a2")],
                [step("b"), step("b2")],
                [step("c", retry=slow_retry)],
            ],
        )
    )


def test_a_failing_branch_stops_the_others_and_waits_for_what_is_in_flight() -> None:
    run = started(Run(failing_branches()))
    run.send(ok("a"))
    run.send(fail("c"))  # c waits to retry
    assert run.step_status("c") is StepStatus.RETRY_WAIT

    t = run.send(fail("a2", retryable=False))

    assert types(t) == ["step_failed", "saga_compensating", "step_failed"]
    assert t.history[2].step == "c"  # abandoned: it will not be tried again
    assert t.history[2].data["failure"].type == FailureType.ABANDONED
    assert run.step_status("c") is StepStatus.FAILED
    assert t.dispatches == ()  # b is in flight: compensation waits for it
    assert run.send(timer(TimerKind.RETRY, "c", 1)).dispatches == ()


def test_a_step_succeeding_after_another_branch_failed_is_compensated_newest_first() -> None:
    run = started(Run(failing_branches()))
    run.send(fail("c", retryable=False))  # a and b are in flight
    assert run.send(ok("a")).dispatches == ()  # a2 never starts; b is still awaited

    t = run.send(ok("b"))  # b's success came after the failure: b2 never starts either

    assert types(t) == ["step_succeeded", "compensation_dispatched"]
    assert sent(t) == [("b", COMPENSATE, 1)]  # b succeeded last: undone first
    compensate_all(run)
    assert undone(run) == ["b", "a"]
    assert run.step_status("b2") is StepStatus.PENDING
    assert run.step_status("a2") is StepStatus.PENDING


def test_compensation_undoes_newest_first_across_branches() -> None:
    run = started(Run(failing_branches()))
    for name in ("a", "b", "a2", "b2"):  # completion order interleaves the branches
        run.send(ok(name))
    run.send(fail("c", retryable=False))
    compensate_all(run)
    assert undone(run) == ["b2", "a2", "b", "a"]


# ---- choice ---------------------------------------------------------------------------------


def payment() -> Choice:
    return Choice(
        name="pay",
        cases=[
            Case(name="large", when=field("input.amount") > 100, steps=[step("review")]),
            Case(
                name="card",
                when=field("input.method").is_in(["visa", "amex"])
                & ~field("input.blocked").exists(),
                steps=[step("charge_card")],
            ),
        ],
        default=[step("invoice")],
    )


def test_a_choice_takes_the_first_case_that_holds_and_says_why() -> None:
    run = Run(saga(payment()), {"amount": 500, "method": "visa"})

    t = run.start()  # both cases hold: the first wins

    assert types(t) == ["saga_started", "case_chosen", "step_dispatched"]
    assert t.history[1].step == "pay"
    assert t.history[1].data == {"case": "large", "reason": "input.amount > 100 held"}
    assert sent(t) == [("review", FORWARD, 1)]
    run.send(ok("review"))
    assert run.status is SagaStatus.COMPLETED
    assert run.instance.nodes["pay"].case == "large"
    assert [d.step for d in run.dispatches] == ["review"]  # untaken cases never run


def test_a_choice_takes_a_later_case_when_the_first_does_not_hold() -> None:
    t = Run(saga(payment()), {"amount": 5, "method": "amex"}).start()
    assert t.history[1].data == {
        "case": "card",
        "reason": 'input.method in ["visa", "amex"] and not (input.blocked exists) held',
    }
    assert sent(t) == [("charge_card", FORWARD, 1)]


def test_a_choice_takes_its_default_when_no_case_holds() -> None:
    t = Run(saga(payment()), {"amount": 5, "method": "visa", "blocked": True}).start()
    assert t.history[1].data == {"case": "default", "reason": "no case held"}
    assert sent(t) == [("invoice", FORWARD, 1)]


def test_a_choice_with_no_case_holding_and_no_default_fails_and_compensates() -> None:
    only_large = Choice(
        name="pay", cases=[Case(name="large", when=field("input.amount") > 100, steps=[step("x")])]
    )
    run = Run(saga(step("hold"), only_large), {"amount": 5})
    run.start()

    t = run.send(ok("hold"))

    assert types(t) == [
        "step_succeeded",
        "node_failed",
        "saga_compensating",
        "compensation_dispatched",
    ]
    failure = t.history[1].data["failure"]
    assert failure.type == FailureType.NO_CASE_MATCHED
    assert "input.amount > 100" in failure.message
    assert run.instance.failure == failure
    assert sent(t) == [("hold", COMPENSATE, 1)]
    run.send(ok("hold", phase=COMPENSATE))
    assert run.status is SagaStatus.COMPENSATED
    assert run.step_status("x") is StepStatus.PENDING


# ---- map ------------------------------------------------------------------------------------


def test_a_map_runs_its_steps_per_item_and_gathers_results_in_item_order() -> None:
    mapped = Map(name="seats", items="input.passengers", steps=[step("book")])
    passengers = [{"name": "ann"}, {"name": "bob"}, {"name": "cy"}]
    run = Run(saga(mapped, step("pay")), {"passengers": passengers})

    t = run.start()

    assert types(t)[:2] == ["saga_started", "items_found"]
    assert t.history[1].data == {"items": 3}
    assert [(d.step, d.input) for d in t.dispatches] == [
        (f"seats[{i}]/book", p) for i, p in enumerate(passengers)
    ]
    for i in (2, 0, 1):  # out of order
        run.send(ok(f"seats[{i}]/book", result=f"seat-{i}"))
    run.send(ok("pay", result="paid"))
    assert run.status is SagaStatus.COMPLETED
    assert run.instance.results() == {
        "seats": [{"book": "seat-0"}, {"book": "seat-1"}, {"book": "seat-2"}],
        "pay": "paid",
    }


def test_a_map_over_no_items_succeeds_with_an_empty_list_of_results() -> None:
    mapped = Map(name="seats", items="input", steps=[step("book")])
    counted = Choice(
        name="any",
        cases=[Case(name="some", when=field("results.seats[0]").exists(), steps=[step("x")])],
        default=[step("notify", input_map={"seats": "results.seats"})],
    )
    run = Run(saga(mapped, counted), [])

    t = run.start()

    assert types(t)[:3] == ["saga_started", "items_found", "node_succeeded"]
    assert run.instance.results() == {"seats": []}
    assert [(d.step, d.input) for d in t.dispatches] == [("notify", {"seats": []})]


def test_an_input_map_gives_the_command_its_input_and_no_results() -> None:
    book = step("book", input_map={"who": "item.name", "at": "index", "order": "input.order"})
    input = {"order": 7, "passengers": [{"name": "ann"}, {"name": "bob"}]}
    run = Run(saga(Map(name="seats", items="input.passengers", steps=[book])), input)

    t = run.start()

    assert [(d.input, d.with_results) for d in t.dispatches] == [
        ({"who": "ann", "at": 0, "order": 7}, False),
        ({"who": "bob", "at": 1, "order": 7}, False),
    ]
    run.send(ok("seats[1]/book", result="s1"))
    t = run.send(fail("seats[0]/book", retryable=False))
    # a compensation gets the same input, and the result of the step it undoes
    assert [(d.step, d.input) for d in t.dispatches] == [
        ("seats[1]/book", {"who": "bob", "at": 1, "order": 7, "result": "s1"})
    ]


def test_a_map_whose_items_are_not_a_list_fails() -> None:
    mapped = Map(name="seats", items="input.passengers", steps=[step("x")])
    run = Run(saga(step("hold"), mapped), {"passengers": "ann"})
    run.start()

    t = run.send(ok("hold"))

    assert types(t)[1:3] == ["node_failed", "saga_compensating"]
    failure = t.history[1].data["failure"]
    assert failure.type == FailureType.INVALID_ITEMS
    assert "not a list (found str)" in failure.message
    assert sent(t) == [("hold", COMPENSATE, 1)]


def test_a_map_with_more_items_than_max_items_fails() -> None:
    run = Run(saga(Map(name="seats", items="input", steps=[step("x")], max_items=2)), [1, 2, 3])

    t = run.start()

    assert types(t) == ["saga_started", "node_failed", "saga_compensating", "saga_compensated"]
    assert "3 items, more than max_items=2" in t.history[1].data["failure"].message
    assert t.dispatches == ()


def test_a_map_in_a_parallel_in_a_map_keys_and_gathers_each_level() -> None:
    inner = Map(name="seats", items="item.people", steps=[step("seat")])
    group = Parallel(name="both", branches=[[inner], [step("note")]])
    groups = [{"people": ["ann", "bob"]}, {"people": ["cy"]}]
    run = Run(saga(Map(name="groups", items="input", steps=[group])), groups)

    t = run.start()

    keys = [d.step for d in t.dispatches]
    assert keys == [
        "groups[0]/seats[0]/seat",
        "groups[0]/seats[1]/seat",
        "groups[0]/note",
        "groups[1]/seats[0]/seat",
        "groups[1]/note",
    ]
    assert [d.input for d in t.dispatches] == ["ann", "bob", groups[0], "cy", groups[1]]
    for key in reversed(keys):
        run.send(ok(key, result=key))
    assert run.status is SagaStatus.COMPLETED
    assert run.instance.results() == {
        "groups": [
            {
                "seats": [{"seat": "groups[0]/seats[0]/seat"}, {"seat": "groups[0]/seats[1]/seat"}],
                "note": "groups[0]/note",
            },
            {"seats": [{"seat": "groups[1]/seats[0]/seat"}], "note": "groups[1]/note"},
        ]
    }
    # failing now would undo the newest first: the completion order, backwards
    assert run.instance.completed == tuple(reversed(keys))


# ---- cancel, deadline, timeouts -------------------------------------------------------------


def test_a_cancel_during_a_parallel_waits_for_the_branches_in_flight_then_undoes() -> None:
    run = Run(saga(Parallel(name="both", branches=[[step("a"), step("a2")], [step("b")]])))
    run.start()
    run.send(ok("a"))  # a2 is in flight, b too

    t = run.send(Cancel(reason="customer left"))

    assert types(t) == ["saga_cancel_requested", "saga_compensating"]
    assert run.instance.failure is not None
    assert run.instance.failure.type == FailureType.CANCELLED
    assert run.send(fail("a2", retryable=False)).dispatches == ()  # b still in flight
    t = run.send(ok("b"))
    assert sent(t) == [("b", COMPENSATE, 1)]
    compensate_all(run)
    assert undone(run) == ["b", "a"]


def test_the_deadline_during_a_map_stops_the_items_not_started() -> None:
    mapped = Map(name="seats", items="input", steps=[step("book")], max_concurrency=1)
    run = Run(saga(mapped, deadline_seconds=60), ["x", "y", "z"])
    run.start()
    run.send(ok("seats[0]/book"))  # seats[1] in flight, seats[2] not started
    run.advance(60)

    t = run.send(timer(TimerKind.DEADLINE, "", 0))

    assert types(t) == ["saga_deadline_exceeded", "saga_compensating"]
    t = run.send(ok("seats[1]/book"))
    assert sent(t) == [("seats[1]/book", COMPENSATE, 1)]
    compensate_all(run)
    assert undone(run) == ["seats[1]/book", "seats[0]/book"]
    assert run.step_status("seats[2]/book") is StepStatus.PENDING
    assert [d.step for d in run.dispatches if d.phase is FORWARD] == [
        "seats[0]/book",
        "seats[1]/book",
    ]


def test_timeouts_and_retries_inside_a_branch_leave_the_other_branch_alone() -> None:
    retried = step(
        "a", timeout_seconds=10, retry=RetryPolicy(max_attempts=2, initial_interval_seconds=3)
    )
    run = Run(saga(Parallel(name="both", branches=[[retried], [step("b"), step("b2")]])))
    run.start()
    run.advance(10)

    t = run.send(timer(TimerKind.TIMEOUT, "a", 1))  # a's first attempt took too long

    assert types(t) == ["attempt_timed_out", "attempt_failed"]
    assert run.step_status("a") is StepStatus.RETRY_WAIT
    assert sent(run.send(ok("b"))) == [("b2", FORWARD, 1)]
    run.advance(3)
    assert sent(run.send(timer(TimerKind.RETRY, "a", 1))) == [("a", FORWARD, 2)]
    run.send(ok("b2"))
    t = run.send(ok("a", 2))
    assert types(t) == ["step_succeeded", "node_succeeded", "saga_completed"]


def test_a_step_timing_out_for_good_in_a_branch_fails_the_saga() -> None:
    run = Run(saga(Parallel(name="both", branches=[[step("a", timeout_seconds=10)], [step("b")]])))
    run.start()
    run.send(ok("b"))
    run.advance(10)

    t = run.send(timer(TimerKind.TIMEOUT, "a", 1))

    assert types(t) == [
        "attempt_timed_out",
        "step_failed",
        "saga_compensating",
        "compensation_dispatched",
    ]
    assert sent(t) == [("b", COMPENSATE, 1)]
    run.send(ok("b", phase=COMPENSATE))
    assert run.status is SagaStatus.COMPENSATED
    t = run.send(ok("a"))  # it did run after all: its effect is undone too
    assert types(t) == ["step_succeeded_late", "saga_compensating", "compensation_dispatched"]
    assert sent(t) == [("a", COMPENSATE, 1)]


# ---- child sagas ----------------------------------------------------------------------------


def with_child() -> Saga:
    return saga(
        step("hold"),
        ChildSaga(name="ship", saga="shipping", input_map={"to": "input.to"}),
        step("bill"),
    )


def test_a_child_saga_is_dispatched_to_the_children_pool_and_its_end_is_its_result() -> None:
    run = Run(with_child(), {"to": "Lyon"})
    run.start()

    t = run.send(ok("hold"))

    (d,) = t.dispatches
    assert (d.step, d.command, d.pool, d.attempt) == ("ship", "saga:shipping", CHILD_POOL, 1)
    assert (d.input, d.with_results) == ({"to": "Lyon"}, False)
    t = run.send(ok("ship", result={"parcel": "p-1"}))
    assert sent(t) == [("bill", FORWARD, 1)]
    run.send(ok("bill"))
    assert run.instance.results()["ship"] == {"parcel": "p-1"}


def test_a_child_saga_that_fails_fails_the_saga_at_once() -> None:
    run = Run(with_child(), {"to": "Lyon"})
    run.start()
    run.send(ok("hold"))

    t = run.send(child_failed("ship"))

    assert types(t) == ["step_failed", "saga_compensating", "compensation_dispatched"]
    assert sent(t) == [("hold", COMPENSATE, 1)]  # one attempt: the child retried its own steps
    assert run.step_status("ship") is StepStatus.FAILED


def test_cancelling_a_parent_tells_its_running_child_to_stop() -> None:
    run = Run(with_child(), {"to": "Lyon"})
    run.start()
    run.send(ok("hold"))

    t = run.send(Cancel())

    assert types(t) == ["saga_cancel_requested", "saga_compensating", "child_cancel_sent"]
    (d,) = t.dispatches
    assert (d.step, d.phase, d.command, d.pool, d.attempt) == (
        "ship",
        FORWARD,
        CANCEL_CHILD_COMMAND,
        CHILD_POOL,
        1,
    )
    # the child compensates itself, then its end fails the node: hold is undone
    assert sent(run.send(child_failed("ship"))) == [("hold", COMPENSATE, 1)]


def test_undoing_a_completed_child_saga_dispatches_its_compensation() -> None:
    run = Run(with_child(), {"to": "Lyon"})
    run.start()
    run.send(ok("hold"))
    run.send(ok("ship", result={"parcel": "p-1"}))

    t = run.send(fail("bill", retryable=False))

    (d,) = t.dispatches
    assert (d.step, d.phase, d.command, d.pool) == ("ship", COMPENSATE, "saga:shipping", CHILD_POOL)
    assert d.input == {"to": "Lyon", "result": {"parcel": "p-1"}}
    assert sent(run.send(ok("ship", phase=COMPENSATE))) == [("hold", COMPENSATE, 1)]


def test_a_child_that_completed_before_the_cancel_reached_it_is_undone() -> None:
    run = Run(with_child(), {"to": "Lyon"})
    run.start()
    run.send(ok("hold"))
    run.send(Cancel())

    t = run.send(ok("ship"))  # it had completed already

    assert sent(t) == [("ship", COMPENSATE, 1)]
    compensate_all(run)
    assert undone(run) == ["ship", "hold"]
