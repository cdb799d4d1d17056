"""The forward walk: from the top, run every node whose turn has come, in every branch.

`decide` calls `advance` after anything that may let the saga move on (its start, a step's
success, a delay's end). The walk goes through the definition in order: a sequence runs its
nodes one after the other, a parallel its branches at once, a choice the case it took, a map
its items; a node that has not succeeded yet stops its sequence there. Running a node is
idempotent (a step in flight stays in flight), so walking again from the top is always right,
and it costs one look per node.

Each node kind runs in its own module and joins with one row in `_RUNS`.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from orchestrator.definitions import ChildSaga, Choice, Map, Parallel, Step, WaitFor
from orchestrator.engine import choice, fanout, operations, parallel, waits
from orchestrator.engine.draft import ROOT
from orchestrator.engine.vocabulary import (
    HistoryEventType,
    NodeStatus,
    Phase,
    SagaStatus,
    StepStatus,
    TimerKind,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from orchestrator.definitions import Node, Task
    from orchestrator.engine.draft import Draft, Scope
    from orchestrator.engine.vocabulary import Failure


def advance(draft: Draft) -> None:
    """Run what may run now; finish the saga when every node succeeded."""
    if draft.instance.status is SagaStatus.RUNNING and run_sequence(
        draft, draft.definition.steps, ROOT
    ):
        draft.set_saga(SagaStatus.COMPLETED)


def run_sequence(draft: Draft, nodes: Sequence[Node], scope: Scope) -> bool:
    """Run the sequence's next node; True when all of them succeeded."""
    runs = _runs()
    for node in nodes:  # noqa: SIM110 - one node at a time: a sequence stops at the first
        if not runs[type(node)](draft, node, scope):
            return False
    return True


def running(draft: Draft) -> bool:
    """Still going forward? (A node that failed stops every branch's walk.)"""
    return draft.instance.status is SagaStatus.RUNNING


def run_task(draft: Draft, task: Task, scope: Scope) -> bool:
    """A step or a child saga: start it when its turn comes; True once it succeeded."""
    key = scope.key(task.name)
    status = draft.steps[key].status
    if status is StepStatus.PENDING and running(draft):
        start_task(draft, task, key)
    return status is StepStatus.SUCCEEDED


def start_task(draft: Draft, task: Task, key: str) -> None:
    """Dispatch the first attempt, or schedule it when the step has a delay."""
    if task.delay_seconds is not None:
        draft.set_step(key, status=StepStatus.SCHEDULED)
        draft.record(
            HistoryEventType.STEP_SCHEDULED,
            step=key,
            phase=Phase.FORWARD,
            delay_seconds=task.delay_seconds,
        )
        draft.schedule(TimerKind.DELAY, key, Phase.FORWARD, 1, task.delay_seconds)
    else:
        draft.dispatch(task, Phase.FORWARD, 1, key)


def fail_node(draft: Draft, key: str, failure: Failure) -> None:
    """A parallel, choice or map cannot go on: the saga stops and compensates."""
    draft.record(HistoryEventType.NODE_FAILED, step=key, failure=failure)
    operations.stop_forward(draft, failure)


def succeed_node(draft: Draft, key: str) -> None:
    draft.set_node(key, status=NodeStatus.SUCCEEDED)
    draft.record(HistoryEventType.NODE_SUCCEEDED, step=key)


def run_all(
    draft: Draft, key: str, limit: int | None, sequences: list[tuple[Sequence[Node], Scope]]
) -> bool:
    """Sequences that run side by side (a parallel's branches, a map's items), started in
    order, at most `limit` unfinished at once; True (and the node succeeded) when all are."""
    state = draft.nodes[key]
    if state.status is NodeStatus.SUCCEEDED:
        return True
    started, unfinished, done = state.started, 0, 0
    for index, (nodes, scope) in enumerate(sequences):
        if not running(draft):
            break
        if index >= started:
            if limit is not None and unfinished >= limit:
                break
            started = index + 1
        if run_sequence(draft, nodes, scope):
            done += 1
        else:
            unfinished += 1
    if started != state.started:
        draft.set_node(key, started=started)
    if done == len(sequences) and running(draft):
        succeed_node(draft, key)
        return True
    return False


@cache
def _runs() -> Mapping[type[Node], Callable[[Draft, Any, Scope], bool]]:
    """How each node kind runs: a new kind joins with its own module and one row here.
    (Built on first use: the node kinds' modules import this one.)"""
    return {
        Step: run_task,
        ChildSaga: run_task,
        Parallel: parallel.run,
        Choice: choice.run,
        Map: fanout.run,
        WaitFor: waits.run,
    }
