"""A choice: the first case whose condition holds on the data (input, results so far, a
map's item) runs, else the default. The case taken, and the condition that held, are in the
history; with no case and no default the node fails and the saga compensates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.definitions.model import children_of
from orchestrator.engine import walk
from orchestrator.engine.state import NodeState, task_keys
from orchestrator.engine.vocabulary import (
    Failure,
    FailureType,
    HistoryEventType,
    NodeStatus,
    StepStatus,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from orchestrator.definitions import Choice, Node
    from orchestrator.engine.draft import Draft, Scope

DEFAULT = "default"


def run(draft: Draft, node: Choice, scope: Scope) -> bool:
    key = scope.key(node.name)
    state = draft.nodes.get(key)
    if state is None:
        if not _choose(draft, node, scope, key):
            return False
        state = draft.nodes[key]
    if state.status is NodeStatus.SUCCEEDED:
        return True
    if walk.run_sequence(draft, _case_nodes(node, state.case), scope) and walk.running(draft):
        walk.succeed_node(draft, key)
        return True
    return False


def _choose(draft: Draft, node: Choice, scope: Scope, key: str) -> bool:
    data = draft.data(scope)
    for case in node.cases:
        if case.when.holds(data):
            return _take(draft, node, scope, case.name, f"{case.when.describe()} held")
    if node.default is not None:
        return _take(draft, node, scope, DEFAULT, "no case held")
    conditions = "; ".join(case.when.describe() for case in node.cases)
    failure = Failure(
        type=FailureType.NO_CASE_MATCHED,
        message=f"choice {node.name!r}: no case held ({conditions}) and it has no default",
        retryable=False,
    )
    draft.nodes[key] = NodeState(status=NodeStatus.FAILED)
    walk.fail_node(draft, key, failure)
    return False


def _take(draft: Draft, node: Choice, scope: Scope, case: str, reason: str) -> bool:
    key = scope.key(node.name)
    draft.nodes[key] = NodeState(case=case)
    draft.record(HistoryEventType.CASE_CHOSEN, step=key, case=case, reason=reason)
    for label, nodes in children_of(node):
        if label != case:  # what the other cases hold never runs
            for skipped in task_keys(nodes, scope.prefix):
                draft.set_step(skipped, status=StepStatus.SKIPPED)
    return True


def _case_nodes(node: Choice, case: str | None) -> Sequence[Node]:
    if case == DEFAULT:
        return node.default or ()
    return next(c.steps for c in node.cases if c.name == case)
