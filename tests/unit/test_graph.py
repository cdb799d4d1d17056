"""A definition as a graph (nodes, forward and compensation edges, groups) and as Mermaid."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

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
from orchestrator.definitions.graph import END, START, Graph, build, mermaid


def undo(command: str) -> Compensation:
    return Compensation(command=command)


LINEAR = Saga(
    name="order",
    version=1,
    steps=[
        Step(name="reserve_credit", pool="payments", compensation=undo("release_credit")),
        Step(name="reserve_stock", pool="inventory", compensation=undo("release_stock")),
        Step(name="charge", pool="payments", command="payments.charge"),
        Step(name="ship", pool="shipping", compensation=undo("recall")),
    ],
)

TRIP = Saga(
    name="trip",
    version=2,
    steps=[
        Step(name="reserve", pool="payments", compensation=undo("release")),
        Parallel(
            name="book",
            max_concurrency=2,
            branches=[
                [Step(name="flight", pool="air", compensation=undo("cancel_flight"))],
                [
                    Step(name="hotel", pool="rooms", compensation=undo("cancel_hotel")),
                    Step(name="notify", pool="mail"),
                ],
            ],
        ),
        Choice(
            name="pay",
            cases=[
                Case(
                    name="card",
                    when=field("input.method") == "card",
                    steps=[Step(name="charge_card", pool="payments", compensation=undo("refund"))],
                ),
                Case(name="free", when=field("input.amount") <= 0, steps=[]),
            ],
            default=[ChildSaga(name="invoice", saga="invoicing", version=1)],
        ),
        Map(
            name="seats",
            items="input.passengers",
            max_concurrency=4,
            steps=[
                Choice(
                    name="seat_kind",
                    cases=[
                        Case(
                            name="window",
                            when=field("item.window") == True,  # noqa: E712 - builds a condition
                            steps=[Step(name="assign_window", pool="air")],
                        )
                    ],
                ),
                Step(name="assign", pool="air", compensation=undo("unassign")),
            ],
        ),
        Step(name="confirm", pool="mail"),
    ],
)


def edges(graph: Graph) -> list[tuple[str, str, str, str | None]]:
    return [(e.source, e.target, e.kind, e.label) for e in graph.edges]


def undone(graph: Graph) -> list[tuple[str, str]]:
    return [(e.source, e.target) for e in graph.compensation_edges]


def test_a_linear_saga_is_a_chain_and_undo_skips_what_has_nothing_to_undo() -> None:
    graph = build(LINEAR)

    assert [(n.id, n.kind) for n in graph.nodes] == [
        (START, "start"),
        ("reserve_credit", "step"),
        ("reserve_stock", "step"),
        ("charge", "step"),
        ("ship", "step"),
        (END, "end"),
    ]
    charge = graph.nodes[3]
    assert (charge.pool, charge.command, charge.compensation) == (
        "payments",
        "payments.charge",
        None,
    )
    assert graph.nodes[1].compensation == "release_credit"
    assert edges(graph) == [
        (START, "reserve_credit", "next", None),
        ("reserve_credit", "reserve_stock", "next", None),
        ("reserve_stock", "charge", "next", None),
        ("charge", "ship", "next", None),
        ("ship", END, "next", None),
    ]
    assert undone(graph) == [("reserve_stock", "reserve_credit"), ("ship", "reserve_stock")]
    assert graph.groups == []


def test_flows_fork_join_and_label_their_edges() -> None:
    graph = build(TRIP)
    found = edges(graph)

    assert ("book", "flight", "branch", "branch 1") in found
    assert ("book", "hotel", "branch", "branch 2") in found
    assert ("flight", "book:join", "join", None) in found
    assert ("notify", "book:join", "join", None) in found
    assert ("pay", "charge_card", "case", 'input.method == "card"') in found
    assert ("pay", "invoice", "default", "default") in found
    # a case with no steps goes straight to the end of the choice
    assert ("pay", "pay:merge", "case", "input.amount <= 0") in found
    assert ("seats", "seat_kind", "item", "each item") in found
    # no default: when no case holds the choice fails, it does not go on
    assert not [e for e in found if e[:2] == ("seat_kind", "seat_kind:merge")]
    assert ("assign_window", "seat_kind:merge", "join", None) in found
    assert ("assign", "seats:join", "join", None) in found
    assert ("seats:join", "confirm", "next", None) in found
    nodes = {n.id: n for n in graph.nodes}
    assert nodes["invoice"].kind == "child"
    assert nodes["invoice"].detail == "saga invoicing (v1)"
    assert nodes["invoice"].compensation == "saga:invoicing"
    assert nodes["seats"].detail == "each item of input.passengers (at most 100, 4 at once)"
    assert nodes["book"].detail == "at most 2 branches at once"
    assert [(g.id, g.kind, g.parent) for g in graph.groups] == [
        ("book", "parallel", None),
        ("pay", "choice", None),
        ("seats", "map", None),
        ("seat_kind", "choice", "seats"),
    ]
    assert nodes["assign_window"].group == "seat_kind"
    assert nodes["assign"].group == "seats"
    assert nodes["confirm"].group is None


def test_undo_goes_back_through_every_way_the_saga_may_have_come() -> None:
    graph = build(TRIP)

    assert undone(graph) == [
        ("flight", "reserve"),
        ("hotel", "reserve"),
        ("charge_card", "hotel"),
        ("charge_card", "flight"),
        ("invoice", "hotel"),
        ("invoice", "flight"),
        # after a choice: whichever case ran, or none (the empty case)
        ("assign", "invoice"),
        ("assign", "charge_card"),
        ("assign", "hotel"),
        ("assign", "flight"),
    ]


def test_the_graph_is_the_same_for_the_same_definition() -> None:
    again = Saga.from_json(TRIP.to_json())

    assert msgspec.json.encode(build(again)) == msgspec.json.encode(build(TRIP))
    assert mermaid(build(again)) == mermaid(build(TRIP))


def test_mermaid_of_a_linear_saga() -> None:
    assert mermaid(build(LINEAR)) == (
        "flowchart TD\n"
        '    n0(["start"])\n'
        '    n1["reserve_credit<br/>payments: reserve_credit<br/>undo: release_credit"]\n'
        '    n2["reserve_stock<br/>inventory: reserve_stock<br/>undo: release_stock"]\n'
        '    n3["charge<br/>payments: payments.charge"]\n'
        '    n4["ship<br/>shipping: ship<br/>undo: recall"]\n'
        '    n5(["end"])\n'
        "    n0 --> n1\n"
        "    n1 --> n2\n"
        "    n2 --> n3\n"
        "    n3 --> n4\n"
        "    n4 --> n5\n"
        "    n2 -.-> n1\n"
        "    n4 -.-> n2\n"
    )


def test_mermaid_nests_subgraphs_and_escapes_what_it_would_read() -> None:
    text = mermaid(build(TRIP))
    lines = text.splitlines()

    assert lines[0] == "flowchart TD"
    # the map's subgraph holds the nested choice's, each closed in turn
    start = lines.index('    subgraph g2 ["map seats"]')
    assert lines[start + 2] == '        subgraph g3 ["choice seat_kind"]'
    assert lines[start + 3].strip().startswith("n12{")
    assert lines[start + 6] == "        end"
    assert lines[start + 9] == "    end"
    assert text.count("subgraph") == text.count("\n    end") + text.count("\n        end") == 4
    assert '-->|"input.method == #quot;card#quot;"|' in text
    assert '-->|"input.amount #lt;= 0"|' in text
    assert '[["invoice<br/>saga invoicing (v1)"]]' in text
    assert text.count("-.->") == len(build(TRIP).compensation_edges)


def test_mermaid_text_cannot_break_out_of_its_quotes() -> None:
    saga = Saga(
        name="odd",
        version=1,
        steps=[Step(name="a", pool="p", command='say "hi" | <b>#1</b>\nnext')],
    )

    [line] = [line for line in mermaid(build(saga)).splitlines() if line.startswith("    n1[")]

    assert line == ('    n1["a<br/>p: say #quot;hi#quot; #124; #lt;b#gt;#35;1#lt;/b#gt; next"]')


def test_the_example_in_the_api_docs_is_what_the_builder_draws() -> None:
    document = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    [code] = [b for b in re.findall(r"```python\n(.*?)```", document, re.S) if "drawing" in b]
    [drawn] = re.findall(r"```mermaid\n(.*?)```", document, re.S)
    namespace: dict[str, object] = {}

    exec(compile(code, "docs/api.md", "exec"), namespace)

    assert namespace["drawing"] == drawn
