"""A map: its steps once per item of the list found at its `items` path when it starts, at
most `max_concurrency` items unfinished at once. An item's keys are prefixed ``name[i]/``;
its steps read the item (``item``, ``index``). Items that are not a list, or more than
`max_items`, fail the node and the saga compensates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.definitions.conditions import MISSING, resolve
from orchestrator.engine import walk
from orchestrator.engine.state import NodeState, StepState, task_keys
from orchestrator.engine.vocabulary import Failure, FailureType, HistoryEventType, NodeStatus

if TYPE_CHECKING:
    from orchestrator.definitions import Map
    from orchestrator.engine.draft import Draft, Scope


def run(draft: Draft, node: Map, scope: Scope) -> bool:
    key = scope.key(node.name)
    state = draft.nodes.get(key)
    if state is None:
        if not _expand(draft, node, scope, key):
            return False
        state = draft.nodes[key]
    if state.status is NodeStatus.FAILED:
        return False
    items = state.items or []
    sequences = [(node.steps, scope.inside(key, i, item)) for i, item in enumerate(items)]
    return walk.run_all(draft, key, node.max_concurrency, sequences)


def _expand(draft: Draft, node: Map, scope: Scope, key: str) -> bool:
    """Find the items, and give each item's steps their (pending) state."""
    items = resolve(draft.data(scope), node.items)
    problem = None
    if items is MISSING or not isinstance(items, list):
        found = "nothing" if items is MISSING else type(items).__name__
        problem = f"{node.items} is not a list (found {found})"
    elif len(items) > node.max_items:
        problem = f"{node.items} has {len(items)} items, more than max_items={node.max_items}"
    if problem is not None:
        draft.nodes[key] = NodeState(status=NodeStatus.FAILED)
        failure = Failure(
            type=FailureType.INVALID_ITEMS, message=f"map {node.name!r}: {problem}", retryable=False
        )
        walk.fail_node(draft, key, failure)
        return False
    assert isinstance(items, list)
    draft.nodes[key] = NodeState(items=items)
    for index in range(len(items)):
        for task_key in task_keys(node.steps, f"{key}[{index}]/"):
            draft.steps[task_key] = StepState()
    draft.record(HistoryEventType.ITEMS_FOUND, step=key, items=len(items))
    return True
