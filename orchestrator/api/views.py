"""What the API returns, built: read models from the instance snapshot (never from history).

The types themselves live in `orchestrator.api.schema` (shared with the client).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.api.schema import CompensationView, InstanceView, StepView
from orchestrator.engine.state import task_keys

if TYPE_CHECKING:
    from orchestrator.definitions import Saga
    from orchestrator.engine import InstanceState

__all__ = ["instance_view"]


def instance_view(definition: Saga, state: InstanceState) -> InstanceView:
    steps = []
    # In definition order (a map's items in item order): the stored map's order is not kept.
    for key in task_keys(definition.steps, expanded=state.nodes):
        step, s = definition.step(key), state.steps[key]
        compensation = None
        if step.compensation is not None:
            compensation = CompensationView(
                command=step.compensation.command,
                pool=step.compensation_pool,
                attempts=s.compensation_attempt,
                error=s.compensation_error,
                compensated_at=s.compensated_at,
            )
        steps.append(
            StepView(
                name=key,
                pool=step.pool,
                command=step.command_name,
                status=s.status.value,
                attempts=s.attempt,
                result=s.result,
                error=s.error,
                started_at=s.started_at,
                finished_at=s.finished_at,
                compensation=compensation,
            )
        )
    return InstanceView(
        id=state.id,
        saga=state.saga,
        version=state.version,
        status=state.status.value,
        input=state.input,
        failure=state.failure,
        created_at=state.created_at,
        updated_at=state.updated_at,
        steps=steps,
    )
