"""What the API returns, built: read models from the instance snapshot (never from history).

The types themselves live in `orchestrator.api.schema` (shared with the client).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.api.schema import (
    ChildView,
    CompensationView,
    InstanceView,
    NodeView,
    ParentView,
    PartView,
    StepView,
)
from orchestrator.definitions import ChildSaga, Map, Parallel, Step
from orchestrator.definitions.model import children_of, node_kind
from orchestrator.engine.state import child_instance_id

if TYPE_CHECKING:
    from collections.abc import Sequence

    from orchestrator.definitions import Node, Saga, Task
    from orchestrator.engine import InstanceState
    from orchestrator.engine.state import StepState

__all__ = ["instance_view"]

PENDING = "pending"


class _Views:
    """The views of one instance's steps, nodes and children, gathered in definition order
    (the snapshot's maps are keyed, and Postgres keeps jsonb keys in an order of its own)."""

    def __init__(self, state: InstanceState) -> None:
        self.state = state
        self.steps: list[StepView] = []
        self.nodes: list[NodeView] = []
        self.children: list[ChildView] = []

    def sequence(self, nodes: Sequence[Node], prefix: str) -> None:
        for node in nodes:
            key = prefix + node.name
            if isinstance(node, Step | ChildSaga):
                self.task(node, key)
                continue
            self.nodes.append(self.node(node, key))
            if isinstance(node, Map):
                found = self.state.nodes.get(key)
                for index in range(len(found.items or ()) if found is not None else 0):
                    self.sequence(node.steps, f"{key}[{index}]/")
            else:
                for _, inner in children_of(node):
                    self.sequence(inner, prefix)

    def task(self, task: Task, key: str) -> None:
        state = self.state.steps.get(key)
        if state is None:  # not in the snapshot: nothing to show
            return
        self.steps.append(_step_view(task, key, state))
        if isinstance(task, ChildSaga):
            # The child's id follows from this instance's and the key, once its order is out.
            started = state.attempt > 0
            self.children.append(
                ChildView(
                    step=key,
                    saga=task.saga,
                    version=task.version,
                    status=state.status.value,
                    instance_id=child_instance_id(self.state.id, key) if started else None,
                )
            )

    def node(self, node: Node, key: str) -> NodeView:
        found = self.state.nodes.get(key)
        started = found.started if found is not None else 0
        parts: list[PartView] = []
        if isinstance(node, Parallel):
            prefix = key.removesuffix(node.name)  # a map's item's, when inside one
            for index, branch in enumerate(node.branches):
                status = self.part_status(branch, prefix, index < started)
                parts.append(PartView(label=f"branch {index + 1}", status=status))
        elif isinstance(node, Map) and found is not None:
            for index in range(len(found.items or ())):
                status = self.part_status(node.steps, f"{key}[{index}]/", index < started)
                parts.append(PartView(label=f"item {index}", status=status))
        return NodeView(
            key=key,
            kind=node_kind(node),
            status=found.status.value if found is not None else PENDING,
            case=found.case if found is not None else None,
            branches=len(node.branches) if isinstance(node, Parallel) else None,
            items=len(found.items) if found is not None and found.items is not None else None,
            started=started,
            parts=parts,
            received=found.received if found is not None else None,
            timed_out=found.timed_out if found is not None else False,
        )

    def part_status(self, nodes: Sequence[Node], prefix: str, started: bool) -> str:
        """A branch's or an item's: its last node's once that one started; until then
        running, or failed when one of its nodes failed."""
        if not started:
            return PENDING
        statuses = [self.status(node, prefix + node.name) for node in nodes]
        if statuses[-1] != PENDING:
            return statuses[-1]
        return "failed" if "failed" in statuses else "running"

    def status(self, node: Node, key: str) -> str:
        found = self.state.steps.get(key) if isinstance(node, Step | ChildSaga) else None
        flow = self.state.nodes.get(key)
        if found is not None:
            return found.status.value
        return flow.status.value if flow is not None else PENDING


def _step_view(step: Task, key: str, s: StepState) -> StepView:
    compensation = None
    if step.compensation is not None:
        compensation = CompensationView(
            command=step.compensation.command,
            pool=step.compensation_pool,
            attempts=s.compensation_attempt,
            error=s.compensation_error,
            compensated_at=s.compensated_at,
        )
    return StepView(
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


def instance_view(definition: Saga, state: InstanceState) -> InstanceView:
    views = _Views(state)
    views.sequence(definition.steps, "")
    shown = {step.name for step in views.steps}
    for key, s in state.steps.items():  # never hide a step the walk did not reach
        if key not in shown:
            views.steps.append(_step_view(definition.step(key), key, s))
    parent = state.parent
    return InstanceView(
        id=state.id,
        saga=state.saga,
        version=state.version,
        status=state.status.value,
        input=state.input,
        failure=state.failure,
        created_at=state.created_at,
        updated_at=state.updated_at,
        steps=views.steps,
        nodes=views.nodes,
        parent=None
        if parent is None
        else ParentView(
            instance_id=parent.instance_id,
            saga=parent.saga,
            version=parent.saga_version,
            step=parent.step,
        ),
        children=views.children,
    )
