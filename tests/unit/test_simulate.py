"""`warren simulate`: the engine alone prints the path a definition would take (no servers)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.processes import assert_refused, run_warren

ORDER = "examples.orders.saga:order_saga"


def test_every_step_succeeds_by_default() -> None:
    done = run_warren({}, "simulate", ORDER, "--input", '{"order_id": "S-1", "amount": 5}')

    assert done.returncode == 0, done.stderr
    assert "order v1  completed" in done.stdout
    assert "path: reserve_credit → reserve_stock → charge → ship" in done.stdout
    assert "compensated: -" in done.stdout
    assert "saga_completed" not in done.stdout  # the history table says it in words
    assert done.stdout.rstrip().splitlines()[-1].split()[3] == "completed"


def test_fail_at_prints_the_compensations_newest_first_as_json() -> None:
    done = run_warren({}, "simulate", ORDER, "--fail-at", "charge", "--json")

    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["saga"] == "order"
    assert out["status"] == "compensated"
    assert out["path"] == ["reserve_credit", "reserve_stock", "charge"]
    assert out["compensated"] == ["reserve_stock", "reserve_credit"]
    assert out["failure"]["type"] == "SimulatedFailure"
    assert [e["seq"] for e in out["history"]] == list(range(1, len(out["history"]) + 1))
    assert out["history"][-1]["type"] == "saga_compensated"


def test_the_saga_ref_is_imported_from_the_current_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        "from orchestrator import Saga, Step\n"
        "one = Saga(name='one', version=2, steps=[Step(name='only', pool='p')])\n"
    )

    done = run_warren({}, "simulate", "mine:one", "--fail-at", "only", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "one v2  compensated" in done.stdout


def test_bad_arguments_are_one_line_not_a_traceback() -> None:
    unknown_step = run_warren({}, "simulate", ORDER, "--fail-at", "nope")
    bad_json = run_warren({}, "simulate", ORDER, "--input", "{nope")
    not_a_saga = run_warren({}, "simulate", "examples.orders.workers:worker")
    no_module = run_warren({}, "simulate", "nowhere.at_all:saga")

    assert_refused(unknown_step, 2, "has no step 'nope' (its steps: reserve_credit, reserve_stock")
    assert_refused(bad_json, 2, "not valid JSON")
    assert_refused(not_a_saga, 1, "is not a Saga")
    assert_refused(no_module, 1, "cannot import module 'nowhere.at_all'")


FLOWS = """
from orchestrator import Case, ChildSaga, Choice, Compensation, Map, Parallel, Saga, Step, field

def step(name):
    return Step(name=name, pool="p", compensation=Compensation(command=f"undo_{name}"))

trip = Saga(name="trip", version=1, steps=[
    step("hold"),
    Parallel(name="book", branches=[[step("flight")], [step("hotel")]]),
    Choice(
        name="payment",
        cases=[Case(name="card", when=field("input.method") == "card", steps=[step("charge")])],
        default=[step("invoice")],
    ),
    Map(name="seats", items="input.passengers", max_concurrency=1, steps=[step("assign_seat")]),
    step("confirm"),
])
parent = Saga(name="parent", version=1, steps=[step("hold"), ChildSaga(name="pay", saga="trip")])
"""
TWO = '{"method": "card", "passengers": ["ada", "bob"]}'


def test_a_flow_s_path_shows_the_case_taken_and_each_map_item(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOWS)

    done = run_warren({}, "simulate", "flows:trip", "--input", TWO, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "trip v1  completed" in done.stdout
    assert (
        "path: hold → flight → hotel → [payment: card] → charge → [seats: 2 items] → "
        "seats[0]/assign_seat → seats[1]/assign_seat → confirm"
    ) in done.stdout
    assert 'case: payment → card (input.method == "card" held)' in done.stdout


def test_fail_at_takes_a_map_item_s_key_and_undoes_newest_first(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOWS)

    done = run_warren(
        {},
        *("simulate", "flows:trip", "--json", "--input", TWO),
        *("--fail-at", "seats[1]/assign_seat"),
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "compensated"
    assert out["cases"] == {"payment": "card"}
    assert out["path"][-2:] == ["seats[0]/assign_seat", "seats[1]/assign_seat"]
    assert out["compensated"] == ["seats[0]/assign_seat", "charge", "hotel", "flight", "hold"]


def test_fail_at_a_step_s_name_fails_it_in_the_first_item(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOWS)

    done = run_warren(
        {},
        *("simulate", "flows:trip", "--json", "--input", '{"method": "x", "passengers": [1, 2]}'),
        *("--fail-at", "assign_seat"),
        cwd=tmp_path,
    )

    out = json.loads(done.stdout)
    assert out["cases"] == {"payment": "default"}
    assert out["path"][-1] == "seats[0]/assign_seat"
    assert out["compensated"] == ["invoice", "hotel", "flight", "hold"]


def test_a_flow_refuses_what_it_cannot_simulate_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOWS)

    wrong_key = run_warren(
        {}, "simulate", "flows:trip", "--fail-at", "book[0]/assign_seat", cwd=tmp_path
    )

    assert_refused(
        wrong_key,
        2,
        "(its steps: hold, flight, hotel, charge, invoice, seats[i]/assign_seat, confirm)",
    )


def test_a_child_saga_runs_when_saga_gives_it_and_fails_its_node_otherwise(
    tmp_path: Path,
) -> None:
    (tmp_path / "flows.py").write_text(FLOWS)
    parent = ("simulate", "flows:parent", "--input", TWO)

    alone = run_warren({}, *parent, "--json", cwd=tmp_path)
    given = run_warren(
        {}, *parent, "--saga", "flows:trip", "--fail-at", "pay/confirm", cwd=tmp_path
    )
    as_json = run_warren({}, *parent, "--saga", "flows:trip", "--json", cwd=tmp_path)

    assert alone.returncode == 0, alone.stderr
    out = json.loads(alone.stdout)
    assert out["failure"]["type"] == "SagaNotFound"
    assert (out["status"], out["compensated"], out["children"]) == ("compensated", ["hold"], {})
    assert given.returncode == 0, given.stderr
    assert "parent v1  compensated" in given.stdout
    assert "child pay: trip v1  compensated" in given.stdout
    assert "  compensated: seats[1]/assign_seat → seats[0]/assign_seat → charge" in given.stdout
    child = json.loads(as_json.stdout)["children"]["pay"]
    assert (child["saga"], child["status"], child["path"][-1]) == ("trip", "completed", "confirm")
