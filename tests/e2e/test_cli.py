"""The `warren` command line against a running API and stack: real processes, real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from orchestrator.api.schema import Graph
from orchestrator.cli import main
from orchestrator.definitions.graph import build, mermaid
from tests.apps.sagas import trip
from tests.conftest import Stack
from tests.support.processes import assert_refused, run_warren

pytestmark = pytest.mark.e2e


def warren(
    stack: Stack, *args: str, api_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    settings = stack.probe.settings
    url = api_url or f"http://{settings.api_host}:{settings.api_port}"
    return run_warren({"WARREN_API_URL": url}, *args)


async def test_start_wait_exit_codes_and_reads(stack: Stack, tmp_path: Path) -> None:
    await stack.up()
    order_file = tmp_path / "order.json"
    order_file.write_text(json.dumps({"order_id": "C-1", "amount": 12}))

    done = warren(
        stack,
        "start",
        "order",
        "--input",
        f"@{order_file}",
        "--correlation-key",
        "cust-1",
        "--wait",
    )
    undone = warren(
        stack,
        "start",
        "order",
        "--input",
        '{"order_id": "C-2", "amount": 1, "fail_at": "ship"}',
        "--wait",
    )

    assert done.returncode == 0, done.stderr
    assert "ended completed" in done.stdout
    assert "reserve_credit" in done.stdout
    assert undone.returncode == 3, undone.stderr
    assert "ended compensated" in undone.stdout

    listed = json.loads(warren(stack, "list", "--correlation-key", "cust-1", "--json").stdout)
    [item] = listed["items"]
    assert item["status"] == "completed"
    status = warren(stack, "status", item["id"])
    assert status.returncode == 0
    assert "completed" in status.stdout
    assert "reserve_stock" in status.stdout
    history = warren(stack, "history", item["id"], "--json")
    assert [e["type"] for e in json.loads(history.stdout)][-1] == "saga_completed"
    assert (
        "saga_completed" not in warren(stack, "history", item["id"]).stdout
    )  # people see "completed"

    table = warren(stack, "list", "--status", "compensated")
    assert "compensated" in table.stdout
    assert table.stdout.count("\n") == 2


async def test_idempotency_key_from_the_command_line(stack: Stack) -> None:
    await stack.api()
    args = (
        "start",
        "order",
        "--input",
        '{"order_id": "K", "amount": 1}',
        "--idempotency-key",
        "k-1",
        "--json",
    )

    first, again = warren(stack, *args), warren(stack, *args)
    other = warren(
        stack,
        "start",
        "order",
        "--input",
        '{"order_id": "K", "amount": 2}',
        "--idempotency-key",
        "k-1",
    )

    assert json.loads(first.stdout)["id"] == json.loads(again.stdout)["id"]
    assert_refused(other, 1, "already used")


async def test_start_many_starts_a_file_of_starts_in_batches_and_names_the_refused_lines(
    stack: Stack, tmp_path: Path
) -> None:
    await stack.api()
    starts = tmp_path / "orders.jsonl"
    lines = [
        {"input": {"order_id": "M-1", "amount": 1}, "idempotency_key": "m-1"},
        {"input": {"order_id": "M-2", "amount": 2}, "correlation_key": "cust-m"},
        {"input": {"order_id": "M-3", "amount": -1}},  # refused by the input schema
        {"input": {"order_id": "M-4", "amount": 4}, "idempotency_key": "m-4"},
    ]
    starts.write_text("\n".join(json.dumps(line) for line in lines[:2]) + "\n\n")
    with starts.open("a") as more:  # a blank line between is skipped
        more.write("\n".join(json.dumps(line) for line in lines[2:]) + "\n")

    first = warren(stack, "start-many", "order", str(starts), "--batch-size", "3")
    again = warren(stack, "start-many", "order", str(starts), "--json")

    assert_refused(first, 1, "1 refused (lines 4)")
    assert "line 4  refused (422 input-invalid)" in first.stdout
    assert "3 of 4 started or found" in first.stdout
    assert first.stdout.count("  started") == 3
    rows = json.loads(again.stdout)
    assert [(row["line"], row["status"]) for row in rows] == [
        (1, 200),
        (2, 201),
        (4, 422),
        (5, 200),
    ]
    assert rows[2]["problem"]["type"] == "urn:warren:problem:input-invalid"
    assert again.returncode == 1
    # Keyed lines found their instance again; the unkeyed one started a second time.
    assert await stack.probe.count("warren.instances") == 4


async def test_retry_resumes_a_failed_compensation(stack: Stack) -> None:
    await stack.up()
    crash_5_times = '{"order_id": "F", "amount": 1, "fail_at": "charge", "compensation_failures": {"reserve_credit": 5}}'

    failed = warren(stack, "start", "order", "--input", crash_5_times, "--wait", "--json")
    assert failed.returncode == 4, failed.stderr
    view = json.loads(failed.stdout)
    credit = next(s for s in view["steps"] if s["name"] == "reserve_credit")
    assert credit["status"] == "compensation_failed"
    assert credit["compensation"]["attempts"] == 3

    retried = warren(stack, "retry", view["id"], "--json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["status"] == "compensating"
    assert await stack.probe.wait_terminal(view["id"]) == "compensated"
    final = json.loads(warren(stack, "status", view["id"], "--json").stdout)
    credit = next(s for s in final["steps"] if s["name"] == "reserve_credit")
    assert credit["compensation"]["attempts"] == 6  # 3, then a fresh budget: 4 and 5 crash, 6 works
    assert await stack.probe.ledger(view["id"]) == [
        ("reserve_credit", "reserve_credit"),
        ("reserve_stock", "reserve_stock"),
        ("reserve_stock", "release_stock"),
        ("reserve_credit", "release_credit"),
    ]


async def test_start_wait_prints_what_happened_in_the_order_it_happened(stack: Stack) -> None:
    """Compensations run newest first: the progress follows the history's `seq`, not the
    order of the steps in the definition."""
    await stack.up()
    fails_at_ship = '{"order_id": "W", "amount": 1, "fail_at": "ship"}'

    result = warren(stack, "start", "order", "--input", fails_at_ship, "--wait")

    assert result.returncode == 3, result.stderr
    progress = [line.split() for line in result.stdout.splitlines() if line.startswith("  ")]
    compensated = [words[1] for words in progress if words[2] == "compensated"]
    assert compensated == ["charge", "reserve_stock", "reserve_credit"], result.stdout
    instance_id = result.stdout.split()[0]
    history = json.loads(warren(stack, "history", instance_id, "--json").stdout)
    shown = [int(words[0]) for words in progress]
    assert shown == sorted(shown), result.stdout  # every event once, in seq order
    assert set(shown) <= {event["seq"] for event in history}
    assert {"compensation_succeeded", "step_failed"} <= {
        event["type"] for event in history if event["seq"] in shown
    }


async def test_operator_commands_and_their_errors(stack: Stack) -> None:
    await stack.up()
    started = json.loads(
        warren(
            stack, "start", "order", "--input", '{"order_id": "O", "amount": 1}', "--json"
        ).stdout
    )
    await stack.probe.wait_terminal(started["id"])

    cancel_ended = warren(stack, "cancel", started["id"])
    retry_completed = warren(stack, "retry", started["id"])
    unknown = warren(stack, "status", "01a21b96-2d5d-70f9-a41e-b1032d1c8a2b")
    bad_input = warren(stack, "start", "order", "--input", "{nope")
    unreachable = warren(stack, "pools", api_url="http://127.0.0.1:1")
    pools = json.loads(warren(stack, "pools", "--json").stdout)
    definitions = warren(stack, "definitions")
    detail = warren(stack, "definitions", "order")

    assert_refused(cancel_ended, 1, "already ended")
    assert_refused(retry_completed, 1, "only failed instances")
    assert_refused(unknown, 1, "no saga instance")
    assert_refused(bad_input, 2, "not valid JSON")
    assert_refused(unreachable, 1, "cannot reach the Warren API")
    assert {p["name"]: p["consumers"] for p in pools["items"]} == {
        "payments": 1,
        "inventory": 1,
        "shipping": 1,
    }
    assert "order" in definitions.stdout
    assert "release_credit" in detail.stdout


async def test_definitions_show_a_graph_and_status_shows_the_nodes(stack: Stack) -> None:
    await stack.api()
    registered = await stack.http.post("/v1/definitions", content=trip.to_json())
    assert registered.status_code == 201, registered.text
    instance_id = await stack.start({"passengers": ["ann"], "method": "card"}, saga="trip")

    drawn = warren(stack, "definitions", "trip", "--graph")
    pinned = warren(stack, "definitions", "trip", "--version", "1", "--graph")
    as_json = warren(stack, "definitions", "trip", "--graph", "--json")
    table = warren(stack, "definitions", "trip")
    status = warren(stack, "status", instance_id)
    no_name = warren(stack, "definitions", "--graph")
    no_version = warren(stack, "definitions", "trip", "--version", "7", "--graph")
    no_saga = warren(stack, "definitions", "nope", "--graph")

    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout == mermaid(build(trip))
    assert pinned.stdout == drawn.stdout
    assert msgspec.json.decode(as_json.stdout, type=Graph) == build(trip)
    assert table.returncode == 0, table.stderr
    assert "seats" not in table.stdout  # the steps: inside the flows too, not the flows
    assert "assign" in table.stdout
    assert "saga:invoicing" in table.stdout
    assert status.returncode == 0, status.stderr
    assert "reserve" in status.stdout
    assert "NODE" in status.stdout
    assert "parallel" in status.stdout
    assert "CHILD STEP" in status.stdout
    assert_refused(no_name, 2, "need a saga NAME")
    assert_refused(no_version, 1, "no version 7 of saga 'trip'")
    assert_refused(no_saga, 1, "no saga 'nope'")


def test_every_command_has_help() -> None:
    commands = sorted(main.commands)  # every command there is, so a new one cannot be missed
    assert {"check", "dead-letters", "start", "worker"} <= set(commands)
    for command in commands:
        result = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", command, "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage:" in result.stdout
