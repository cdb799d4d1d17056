"""The instance view: every step by key in definition order (a map's items in item order), the
state of every parallel, choice and map with their branches and items, parent and children."""

from __future__ import annotations

from uuid import UUID

import msgspec

from orchestrator.api.views import instance_view
from orchestrator.definitions import (
    Case,
    ChildSaga,
    Choice,
    Compensation,
    Map,
    Parallel,
    Saga,
    Step,
    field,
)
from orchestrator.engine.state import InstanceState, ParentLink, child_instance_id
from tests.support.engine import Run, fail, ok

FLOW = Saga(
    name="trip",
    version=1,
    steps=[
        Parallel(
            name="book",
            branches=[
                [
                    Map(
                        name="seats",
                        items="input.passengers",
                        steps=[
                            Step(name="assign", pool="air", compensation=Compensation(command="u")),
                            Step(name="print", pool="air"),
                        ],
                    )
                ],
                [
                    Choice(
                        name="pay",
                        cases=[
                            Case(
                                name="card",
                                when=field("input.method") == "card",
                                steps=[Step(name="charge", pool="payments")],
                            )
                        ],
                        default=[ChildSaga(name="invoice", saga="invoicing", version=2)],
                    )
                ],
            ],
        ),
        Step(name="zz_confirm", pool="mail"),
    ],
)


def started(input: dict[str, object]) -> Run:
    run = Run(FLOW, input)
    run.start(input)
    return run


def test_steps_follow_the_definition_and_the_items_not_the_snapshot_order() -> None:
    run = started({"passengers": ["ann", "bob", "cy"], "method": "cash"})
    # the snapshot as Postgres gives it back: jsonb orders keys by length, then bytes
    scrambled = dict(sorted(run.instance.steps.items(), key=lambda kv: (len(kv[0]), kv[0])))
    instance = msgspec.structs.replace(run.instance, steps=scrambled)

    view = instance_view(FLOW, instance)

    assert [s.name for s in view.steps] == [
        "seats[0]/assign",
        "seats[0]/print",
        "seats[1]/assign",
        "seats[1]/print",
        "seats[2]/assign",
        "seats[2]/print",
        "charge",
        "invoice",
        "zz_confirm",
    ]
    assert view.steps[0].compensation is not None
    assert [s.status for s in view.steps] == [
        "running",
        "pending",
        "running",
        "pending",
        "running",
        "pending",
        "skipped",  # the case not taken
        "running",  # the default: the child saga
        "pending",
    ]


def test_nodes_show_their_status_case_branches_and_items() -> None:
    run = started({"passengers": ["ann", "bob"], "method": "card"})
    run.send(ok("seats[0]/assign"))
    run.send(ok("seats[0]/print"))

    view = instance_view(FLOW, run.instance)
    nodes = {n.key: n for n in view.nodes}

    assert [n.key for n in view.nodes] == ["book", "seats", "pay"]
    book, seats, pay = nodes["book"], nodes["seats"], nodes["pay"]
    assert (book.kind, book.status, book.branches, book.started) == ("parallel", "running", 2, 2)
    assert [(p.label, p.status) for p in book.parts] == [
        ("branch 1", "running"),
        ("branch 2", "running"),
    ]
    assert (seats.kind, seats.status, seats.items, seats.started) == ("map", "running", 2, 2)
    assert [(p.label, p.status) for p in seats.parts] == [
        ("item 0", "succeeded"),
        ("item 1", "running"),
    ]
    assert (pay.kind, pay.status, pay.case, pay.items, pay.parts) == (
        "choice",
        "running",
        "card",
        None,
        [],
    )
    assert [(c.step, c.status) for c in view.children] == [("invoice", "skipped")]  # not taken
    assert view.parent is None


def test_a_node_whose_turn_has_not_come_is_pending_and_a_failed_item_says_so() -> None:
    pending = instance_view(FLOW, Run(FLOW).instance)
    run = started({"passengers": ["ann"], "method": "card"})
    run.send(fail("seats[0]/assign", retryable=False))

    failed = instance_view(FLOW, run.instance)

    assert [(n.key, n.status, n.items) for n in pending.nodes] == [
        ("book", "pending", None),
        ("seats", "pending", None),
        ("pay", "pending", None),
    ]
    assert [p.status for p in pending.nodes[0].parts] == ["pending", "pending"]
    seats = failed.nodes[1]
    assert [(p.label, p.status) for p in seats.parts] == [("item 0", "failed")]


def test_children_and_parent() -> None:
    run = started({"passengers": [], "method": "cash"})
    parent = ParentLink(
        instance_id=UUID("0190c2a4-0000-7000-8000-0000000000aa"),
        saga="holiday",
        saga_version=3,
        step="book_trip",
        command="saga:trip",
    )
    instance: InstanceState = msgspec.structs.replace(run.instance, parent=parent)

    view = instance_view(FLOW, instance)

    [child] = view.children
    assert (child.step, child.saga, child.version, child.status, child.instance_id) == (
        "invoice",
        "invoicing",
        2,
        "running",
        child_instance_id(instance.id, "invoice"),  # the id the orchestrators start it with
    )
    assert view.parent is not None
    assert (view.parent.instance_id, view.parent.saga, view.parent.step) == (
        parent.instance_id,
        "holiday",
        "book_trip",
    )
    assert view.nodes[1].items == 0
    assert view.nodes[2].case == "default"


def test_a_parallel_inside_a_map_item_reads_that_items_steps() -> None:
    nested = Saga(
        name="legs",
        version=1,
        steps=[
            Map(
                name="legs",
                items="input.legs",
                steps=[
                    Parallel(
                        name="book",
                        branches=[
                            [Step(name="flight", pool="air")],
                            [Step(name="car", pool="road")],
                        ],
                    )
                ],
            )
        ],
    )
    run = Run(nested, {"legs": ["out", "back"]})
    run.start()
    run.send(ok("legs[1]/car"))

    view = instance_view(nested, run.instance)

    assert [n.key for n in view.nodes] == ["legs", "legs[0]/book", "legs[1]/book"]
    assert [[p.status for p in n.parts] for n in view.nodes[1:]] == [
        ["running", "running"],
        ["running", "succeeded"],
    ]
    assert [s.name for s in view.steps] == [
        "legs[0]/flight",
        "legs[0]/car",
        "legs[1]/flight",
        "legs[1]/car",
    ]
