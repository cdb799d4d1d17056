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
