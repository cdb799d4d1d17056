"""Child sagas through the real processes: a parent's node starts another saga, waits for its
end, and undoes it when the parent compensates; cancelling the parent cancels the child."""

from __future__ import annotations

from uuid import UUID

import pytest

from orchestrator.engine.state import child_instance_id
from orchestrator.service.registry import register_saga
from tests.apps.sagas import kid, parent, slow_kid, waits_for_slow_kid
from tests.conftest import Stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


async def _up(stack: Stack, *sagas: object) -> None:
    for saga in sagas:
        await register_saga(stack.probe.engine, saga)  # type: ignore[arg-type]
    await stack.api()
    await stack.orchestrators()
    worker = stack.processes.worker("tests.apps.fast:worker", "fast")
    await stack.probe.wait_consumers(stack.topology.pool_queue("fast"), alive=worker.alive)


async def _types(stack: Stack, instance_id: str | UUID, step: str | None = None) -> list[str]:
    history = await stack.probe.history(str(instance_id))
    return [h["type"] for h in history if step is None or h["step"] == step]


async def test_a_child_saga_runs_and_its_results_become_the_nodes_result(stack: Stack) -> None:
    await _up(stack, kid, parent)
    parent_id = await stack.start({"who": "ann"}, saga="parent")

    assert await stack.probe.wait_terminal(parent_id) == "completed"
    child_id = child_instance_id(UUID(parent_id), "run_kid")
    assert await stack.probe.wait_terminal(str(child_id)) == "completed"
    child = (await stack.http.get(f"/v1/instances/{child_id}")).json()
    assert child["input"] == {"who": "ann"}  # mapped from the parent's input
    body = (await stack.http.get(f"/v1/instances/{parent_id}")).json()
    run_kid = next(s for s in body["steps"] if s["name"] == "run_kid")
    assert run_kid["result"] == {"take": {"done": "take"}}
    # each view names the other: the parent its child, the child its parent and the node
    assert [(c["step"], c["saga"], c["status"], c["instance_id"]) for c in body["children"]] == [
        ("run_kid", "kid", "succeeded", str(child_id))
    ]
    assert child["parent"] == {
        "instance_id": parent_id,
        "saga": "parent",
        "version": 1,
        "step": "run_kid",
    }
    assert [(n["key"], n["case"]) for n in body["nodes"]] == [("then", "default")]


async def test_compensating_the_parent_undoes_the_child_that_completed(stack: Stack) -> None:
    await _up(stack, kid, parent)
    parent_id = await stack.start({"who": "bob", "then_fail": True}, saga="parent")

    assert await stack.probe.wait_terminal(parent_id) == "compensated"
    child_id = child_instance_id(UUID(parent_id), "run_kid")
    assert await stack.probe.wait_terminal(str(child_id)) == "compensated"
    child_history = await _types(stack, child_id)
    assert child_history.index("saga_completed") < child_history.index("child_undo_requested")
    assert (await _types(stack, child_id, "take")).count("compensation_succeeded") == 1
    parent_history = await _types(stack, parent_id, "run_kid")
    assert parent_history.count("compensation_succeeded") == 1  # the child's undo, answered


async def test_cancelling_the_parent_cancels_its_running_child(stack: Stack) -> None:
    await _up(stack, slow_kid, waits_for_slow_kid)
    parent_id = await stack.start({}, saga="waits-for-slow-kid")
    child_id = str(child_instance_id(UUID(parent_id), "run_slow_kid"))

    async def child_waiting() -> bool:
        return "step_scheduled" in await _types(stack, child_id)

    await wait_for(child_waiting, what="the child to start and schedule its step")
    response = await stack.http.post(f"/v1/instances/{parent_id}/cancel", json={})
    assert response.status_code in (200, 202), response.text

    assert await stack.probe.wait_terminal(child_id) == "compensated"
    assert await stack.probe.wait_terminal(parent_id) == "compensated"
    assert "saga_cancel_requested" in await _types(stack, child_id)
    assert (await _types(stack, parent_id, "first")).count("compensation_succeeded") == 1
