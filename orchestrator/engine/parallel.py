"""A parallel: its branches run at once (at most `max_concurrency` unfinished), and it
succeeds when every branch has. A failure anywhere is the saga's (see `forward`): no branch
starts anything new, steps in flight are waited for, and compensation undoes what succeeded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.engine import walk
from orchestrator.engine.state import NodeState
from orchestrator.engine.vocabulary import HistoryEventType

if TYPE_CHECKING:
    from orchestrator.definitions import Parallel
    from orchestrator.engine.draft import Draft, Scope


def run(draft: Draft, node: Parallel, scope: Scope) -> bool:
    key = scope.key(node.name)
    if key not in draft.nodes:
        draft.nodes[key] = NodeState()
        draft.record(HistoryEventType.BRANCHES_STARTED, step=key, branches=len(node.branches))
    branches = [(branch, scope) for branch in node.branches]
    return walk.run_all(draft, key, node.max_concurrency, branches)
