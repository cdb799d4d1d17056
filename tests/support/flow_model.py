"""The reference model of the flow engine's property tests (tests/unit/test_engine_flow_properties.py).

Random graphs of nested parallels, choices, maps, child sagas and steps (`flows`), a random
schedule of outcomes (`drive`), and the rules a run must obey, written from the definition and
the history alone, never from the engine's walk: what must be done before a node may start
(`Facts`), which case a choice must take (`holds`), how many branches or items may be
unfinished at once, and in which order compensations must run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from orchestrator.definitions import (
    Case,
    ChildSaga,
    Choice,
    Compensation,
    Map,
    Node,
    Parallel,
    RetryPolicy,
    Saga,
    Step,
)
from orchestrator.definitions import conditions as dsl
from orchestrator.definitions.model import CANCEL_CHILD_COMMAND, CHILD_POOL
from orchestrator.engine import (
    Cancel,
    Dispatch,
    Event,
    HistoryEvent,
    InstanceState,
    Resume,
    SagaStatus,
    ScheduleTimer,
    Start,
    StepReply,
    TimerFired,
    Transition,
    decide,
    new_instance,
)
from tests.support.engine import COMPENSATE, FORWARD, INSTANCE_ID, Run, fail, ok

FLOW_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
MAX_DEPTH = 3
MAX_DUPLICATES = 6
MAX_STALE = 3
MAX_RESUMES = 2
MAX_DEAD_LETTERS = 2
Outcome = Literal["ok", "retryable", "business"]
# Success is likelier, so that deep graphs get far enough to have something to compensate.
WEIGHTED_OUTCOMES: tuple[Outcome, ...] = ("ok", "ok", "ok", "ok", "retryable", "business")

# ---- conditions: a small language the model evaluates itself --------------------------------

# ("eq", name, value) | ("lt", name, value) | ("in", name, values) | ("exists", name) over the
# saga's input; ("done", step): the step's result is there (`results.<step>` exists);
# ("not", c) | ("and", c, c) | ("or", c, c)
Cond = tuple[Any, ...]


@st.composite
def condition_trees(draw: st.DrawFn, steps: tuple[str, ...], depth: int = 0) -> Cond:
    """A condition on the input, or on the results of `steps` (outside any map, made before)."""
    kinds = ["eq", "lt", "in", "exists"] + ["done"] * bool(steps)
    kind = draw(st.sampled_from(kinds + ["not", "and", "or"] * (depth < 2)))
    if kind in ("eq", "lt"):
        return (kind, draw(st.sampled_from("ab")), draw(st.integers(0, 2)))
    if kind == "in":
        return ("in", draw(st.sampled_from("ab")), tuple(draw(st.sets(st.integers(0, 2)))))
    if kind == "exists":
        return ("exists", draw(st.sampled_from("ac")))
    if kind == "done":
        return ("done", draw(st.sampled_from(steps)))
    if kind == "not":
        return ("not", draw(condition_trees(steps, depth + 1)))
    return (kind, draw(condition_trees(steps, depth + 1)), draw(condition_trees(steps, depth + 1)))


def condition_of(cond: Cond) -> dsl.Condition:
    """The engine's condition for `cond`, built with the public DSL."""
    kind = cond[0]
    if kind == "eq":
        return dsl.field(f"input.{cond[1]}") == int(cond[2])
    if kind == "lt":
        return dsl.field(f"input.{cond[1]}") < int(cond[2])
    if kind == "in":
        return dsl.field(f"input.{cond[1]}").is_in(list(cond[2]))
    if kind == "exists":
        return dsl.field(f"input.{cond[1]}").exists()
    if kind == "done":
        return dsl.field(f"results.{cond[1]}").exists()
    if kind == "not":
        negated: dsl.Condition = ~condition_of(cond[1])
        return negated
    left, right = condition_of(cond[1]), condition_of(cond[2])
    both: dsl.Condition = left & right if kind == "and" else left | right
    return both


def holds(cond: Cond, input: dict[str, Any], succeeded: set[str]) -> bool:
    kind = cond[0]
    if kind == "eq":
        return cond[1] in input and input[cond[1]] == cond[2]
    if kind == "lt":
        return cond[1] in input and input[cond[1]] < cond[2]
    if kind == "in":
        return cond[1] in input and input[cond[1]] in cond[2]
    if kind == "exists":
        return cond[1] in input
    if kind == "done":
        return cond[1] in succeeded
    if kind == "not":
        return not holds(cond[1], input, succeeded)
    if kind == "and":
        return holds(cond[1], input, succeeded) and holds(cond[2], input, succeeded)
    return holds(cond[1], input, succeeded) or holds(cond[2], input, succeeded)


# ---- random graphs --------------------------------------------------------------------------


@dataclass
class Graph:
    """A random saga, the model's copy of its choices' conditions, and a random input."""

    saga: Saga
    cases: dict[str, list[tuple[str, Cond]]]
    """Each choice's cases, in order, with the condition the model evaluates."""
    input: dict[str, Any]


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=draw(st.integers(1, 3)),
        initial_interval_seconds=draw(st.sampled_from([0.0, 1.0])),
    )


class _Names:
    def __init__(self) -> None:
        self.count = 0

    def next(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"


@st.composite
def flows(draw: st.DrawFn) -> Graph:
    names = _Names()
    cases: dict[str, list[tuple[str, Cond]]] = {}

    plain: list[str] = []  # steps and child sagas outside any map, in the order made

    def sequence(depth: int, *, min_size: int = 1, in_map: bool = False) -> list[Node]:
        size = draw(st.integers(min_size, 3 if depth == 0 else 2))
        return [node(depth, in_map) for _ in range(size)]

    def node(depth: int, in_map: bool) -> Node:
        kinds = ["step", "step", "child"]
        if depth < MAX_DEPTH:
            kinds += ["parallel", "choice", "map"]
        kind = draw(st.sampled_from(kinds), label="kind")
        if kind == "step":
            compensation = None
            if draw(st.booleans()):
                compensation = Compensation(
                    command="undo",
                    retry=draw(policies()),
                    timeout_seconds=draw(st.sampled_from([None, 10.0])),
                )
            name = names.next("s")
            if not in_map:
                plain.append(name)
            return Step(
                name=name,
                pool=draw(st.sampled_from(["p0", "p1"])),
                compensation=compensation,
                retry=draw(policies()),
                timeout_seconds=draw(st.sampled_from([None, None, 10.0])),
                delay_seconds=draw(st.sampled_from([None, None, None, 5.0])),
            )
        if kind == "child":
            input_map = draw(st.sampled_from([None, {"a": "input.a"}]))
            name = names.next("k")
            if not in_map:
                plain.append(name)
            return ChildSaga(name=name, saga="kid", input_map=input_map)
        if kind == "parallel":
            name = names.next("par")
            branches = [sequence(depth + 1, in_map=in_map) for _ in range(draw(st.integers(1, 3)))]
            limit = draw(st.sampled_from([None, 1, 2]))
            return Parallel(name=name, branches=branches, max_concurrency=limit)
        if kind == "choice":
            name = names.next("ch")
            drawn = []
            for i in range(draw(st.integers(1, 2))):
                when = draw(condition_trees(tuple(plain)))
                drawn.append((f"c{i}", when, sequence(depth + 1, min_size=0, in_map=in_map)))
            cases[name] = [(case, cond) for case, cond, _ in drawn]
            default = draw(st.sampled_from([None, "seq"]))
            return Choice(
                name=name,
                cases=[Case(name=n, when=condition_of(c), steps=s) for n, c, s in drawn],
                default=sequence(depth + 1, min_size=0, in_map=in_map) if default else None,
            )
        return Map(
            name=names.next("m"),
            items=draw(st.sampled_from(["input.xs"] * 5 + ["input.a"] + ["item.ys"] * 3 * in_map)),
            steps=sequence(depth + 1, in_map=True),
            max_concurrency=draw(st.sampled_from([None, 1, 2])),
            max_items=draw(st.sampled_from([100] * 4 + [2])),
        )

    saga = Saga(
        name="flow",
        version=1,
        steps=sequence(0),
        deadline_seconds=draw(st.sampled_from([None, None, 30.0])),
    )
    input: dict[str, Any] = {
        "a": draw(st.integers(0, 2)),
        "b": draw(st.integers(0, 2)),
        "xs": [
            {"i": i, "ys": list(range(draw(st.integers(0, 2))))}
            for i in range(draw(st.integers(0, 3)))
        ],
    }
    if draw(st.booleans()):
        input["c"] = None
    return Graph(saga=saga, cases=cases, input=input)


# ---- where a node sits, and what the history says is done ----------------------------------


@dataclass(frozen=True)
class Place:
    """A node's sequence, its position there, and the node that holds the sequence."""

    sequence: tuple[Node, ...]
    index: int
    parent: Node | None
    case: str | None = None
    """The case (or "default") of a choice parent the node runs in."""


def places(
    nodes: tuple[Node, ...], parent: Node | None = None, case: str | None = None
) -> dict[str, Place]:
    found: dict[str, Place] = {}
    for index, node in enumerate(nodes):
        found[node.name] = Place(tuple(nodes), index, parent, case)
        if isinstance(node, Parallel):
            for branch in node.branches:
                found |= places(tuple(branch), node)
        elif isinstance(node, Choice):
            for c in node.cases:
                found |= places(tuple(c.steps), node, c.name)
            found |= places(tuple(node.default or ()), node, "default")
        elif isinstance(node, Map):
            found |= places(tuple(node.steps), node)
    return found


def split_key(key: str) -> tuple[str, str]:
    """``m1[0]/m2[1]/s3`` -> (``m1[0]/m2[1]/``, ``s3``)."""
    prefix, _, name = key.rpartition("/")
    return (prefix + "/" if prefix else ""), name


def outer_prefix(prefix: str) -> str:
    """The prefix of the map whose item `prefix` ends with: drop its last ``m[i]/``."""
    return split_key(prefix[:-1])[0]


@dataclass
class Facts:
    """What the history so far says happened, by key."""

    started: set[str] = field(default_factory=set)
    """Steps and child sagas dispatched or scheduled, and composites begun (or failed)."""
    succeeded: list[str] = field(default_factory=list)
    """Steps and child sagas in the order they succeeded (late ones too)."""
    compensated: list[str] = field(default_factory=list)
    compensation_started: list[str] = field(default_factory=list)
    chosen: dict[str, str] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    failed_nodes: set[str] = field(default_factory=set)
    in_flight: set[str] = field(default_factory=set)
    """Steps with a forward attempt out or waiting to retry."""
    waiting: set[str] = field(default_factory=set)
    """Steps waiting to retry (or whose next attempt goes out at once)."""


class Checker:
    """Checks each history event against the definition and the facts before it."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.saga = graph.saga
        self.places = places(tuple(self.saga.steps))
        self.facts = Facts()
        self.left_running_at: int | None = None
        self.children_to_stop: set[str] = set()
        """The child sagas running when the saga stopped going forward."""

    # -- done and started, from the facts --

    def done(self, node: Node, prefix: str) -> bool:
        key, facts = prefix + node.name, self.facts
        if isinstance(node, Step | ChildSaga):
            return key in facts.succeeded
        if isinstance(node, Parallel):
            return all(self.sequence_done(b, prefix) for b in node.branches)
        if isinstance(node, Choice):
            return key in facts.chosen and self.sequence_done(
                case_steps(node, facts.chosen[key]), prefix
            )
        assert isinstance(node, Map), "the model's random sagas hold no waits"
        return key in facts.items and all(
            self.sequence_done(node.steps, f"{key}[{i}]/") for i in range(facts.items[key])
        )

    def sequence_done(self, nodes: Any, prefix: str) -> bool:
        return all(self.done(n, prefix) for n in nodes)

    def started(self, node: Node, prefix: str) -> bool:
        return prefix + node.name in self.facts.started

    # -- the rules --

    def may_start(self, key: str) -> None:
        """A node starts only once every node before it in its sequence is done, in every
        enclosing sequence, and only in the case its choice took."""
        prefix, name = split_key(key)
        while True:
            place = self.places[name]
            for before in place.sequence[: place.index]:
                assert self.done(before, prefix), f"{key} started before {prefix}{before.name}"
            parent = place.parent
            if parent is None:
                return
            if isinstance(parent, Map):
                prefix = outer_prefix(prefix)
            if isinstance(parent, Choice):
                chosen = self.facts.chosen.get(prefix + parent.name)
                assert chosen == place.case, f"{key} runs in case {place.case}, not {chosen}"
            name = parent.name

    def check_limits(self, nodes: Any, prefix: str) -> None:
        """At most max_concurrency branches or items started and unfinished at once."""
        for node in nodes:
            if not self.started(node, prefix):
                continue
            if isinstance(node, Parallel):
                sequences = [(b, prefix) for b in node.branches]
            elif isinstance(node, Map):
                key = prefix + node.name
                count = self.facts.items.get(key, 0)
                sequences = [(node.steps, f"{key}[{i}]/") for i in range(count)]
            elif isinstance(node, Choice):
                chosen = self.facts.chosen.get(prefix + node.name)
                if chosen is not None:
                    self.check_limits(case_steps(node, chosen), prefix)
                continue
            else:
                continue
            unfinished = [
                (nodes, p)
                for nodes, p in sequences
                if self.started(nodes[0], p) and not self.sequence_done(nodes, p)
            ]
            if node.max_concurrency is not None:
                assert len(unfinished) <= node.max_concurrency, f"{prefix}{node.name} over limit"
            for inner, p in sequences:
                self.check_limits(inner, p)

    def see(self, h: HistoryEvent, status_before: SagaStatus) -> None:
        facts, key = self.facts, h.step or ""
        starts = h.type in ("step_scheduled", "branches_started", "case_chosen", "items_found")
        starts = starts or (h.type == "step_dispatched" and h.attempt == 1)
        if starts or h.type == "node_failed":
            assert self.left_running_at is None, f"{h.type} {key} after the saga left running"
            self.may_start(key)
            facts.started.add(key)
        if h.type == "case_chosen":
            expected = self.expected_case(key)
            assert h.data["case"] == expected, f"{key} took {h.data['case']}, not {expected}"
            assert h.data["reason"]
            facts.chosen[key] = h.data["case"]
        elif h.type == "items_found":
            node = self.saga.node(key)
            assert isinstance(node, Map)
            items = self.items_of(node, split_key(key)[0])
            assert isinstance(items, list)
            assert len(items) <= node.max_items
            assert h.data["items"] == len(items)
            facts.items[key] = len(items)
        elif h.type == "node_failed":
            node = self.saga.node(key)
            if isinstance(node, Choice):
                assert self.expected_case(key) is None
            else:
                assert isinstance(node, Map)
                items = self.items_of(node, split_key(key)[0])
                assert not isinstance(items, list) or len(items) > node.max_items
            facts.failed_nodes.add(key)
        elif h.type == "step_dispatched":
            assert self.left_running_at is None, f"{key} dispatched after the saga left running"
            facts.in_flight.add(key)
            facts.waiting.discard(key)
        elif h.type == "attempt_failed" and h.phase is FORWARD:
            facts.in_flight.add(key)
            facts.waiting.add(key)
        elif h.type in ("step_succeeded", "step_succeeded_late"):
            assert key not in facts.succeeded, f"{key} succeeded twice"
            if h.type == "step_succeeded_late":
                assert self.left_running_at is not None
            facts.succeeded.append(key)
            facts.in_flight.discard(key)
            facts.waiting.discard(key)
        elif h.type == "step_failed":
            facts.in_flight.discard(key)
            facts.waiting.discard(key)
        elif h.type == "compensation_dispatched" and key not in facts.compensation_started:
            self.may_compensate(key)
            facts.compensation_started.append(key)
        elif h.type == "compensation_succeeded":
            assert key not in facts.compensated, f"{key} compensated twice"
            facts.compensated.append(key)
        elif h.type == "saga_compensating" and self.left_running_at is None:
            assert status_before is SagaStatus.RUNNING
            self.left_running_at = h.seq
            running = [k for k in facts.in_flight if isinstance(self.saga.node(k), ChildSaga)]
            self.children_to_stop = set(running)
        elif h.type == "saga_completed":
            assert self.sequence_done(self.saga.steps, ""), "completed with nodes not done"

    def may_compensate(self, key: str) -> None:
        """Undo only what succeeded, once nothing runs forward, newest first."""
        facts = self.facts
        assert key in facts.succeeded, f"{key} compensated but never succeeded"
        assert self.left_running_at is not None
        assert not facts.in_flight, f"compensation began while {facts.in_flight} ran"
        newer = facts.succeeded[facts.succeeded.index(key) + 1 :]
        for later in newer:
            if compensable(self.saga, later):
                assert later in facts.compensated, f"{key} undone before newer {later}"

    def expected_results(self, nodes: Any, prefix: str, results: dict[str, Any]) -> dict[str, Any]:
        """The results by node name: a map's, once it found its items, a list by item."""
        out: dict[str, Any] = {}
        for node in nodes:
            key = prefix + node.name
            if isinstance(node, Step | ChildSaga):
                if key in results:
                    out[node.name] = results[key]
            elif isinstance(node, Parallel):
                for branch in node.branches:
                    out |= self.expected_results(branch, prefix, results)
            elif isinstance(node, Choice):
                if key in self.facts.chosen:
                    chosen = case_steps(node, self.facts.chosen[key])
                    out |= self.expected_results(chosen, prefix, results)
            elif key in self.facts.items:
                out[node.name] = [
                    self.expected_results(node.steps, f"{key}[{i}]/", results)
                    for i in range(self.facts.items[key])
                ]
        return out

    def item_at(self, prefix: str) -> Any:
        """The item a map item's prefix (``m1[0]/m2[1]/``) runs over, found from the input."""
        item: Any = None
        parts = prefix.split("/")[:-1]
        for depth, part in enumerate(parts):
            name, index = part[:-1].split("[")
            node = self.saga.node(name)
            assert isinstance(node, Map)
            outer = "".join(f"{p}/" for p in parts[:depth])
            found = self.items_of(node, outer, item)
            item = found[int(index)]
        return item

    def items_of(self, node: Map, prefix: str, item: Any = None) -> Any:
        """What the map's items path finds at `prefix` (where the enclosing item is `item`,
        found from the prefix when not given)."""
        if node.items == "item.ys":  # an item of ys is a number: it has no ys
            item = item if item is not None else self.item_at(prefix)
            return item.get("ys") if isinstance(item, dict) else None
        return self.graph.input.get(node.items.removeprefix("input."))

    def expected_case(self, key: str) -> str | None:
        _, name = split_key(key)
        for case, cond in self.graph.cases[name]:
            if holds(cond, self.graph.input, set(self.facts.succeeded)):
                return case
        node = self.saga.node(key)
        assert isinstance(node, Choice)
        return "default" if node.default is not None else None


def case_steps(node: Choice, case: str) -> tuple[Node, ...]:
    if case == "default":
        return tuple(node.default or ())
    return next(tuple(c.steps) for c in node.cases if c.name == case)


def compensable(saga: Saga, key: str) -> bool:
    return saga.step(key).compensation is not None


def task_count_bound(nodes: Any, items: int) -> int:
    """Steps and child sagas a run can reach at most (every case, every item)."""
    total = 0
    for node in nodes:
        if isinstance(node, Step | ChildSaga):
            total += 1
        elif isinstance(node, Parallel):
            total += sum(task_count_bound(b, items) for b in node.branches)
        elif isinstance(node, Choice):
            total += sum(task_count_bound(c.steps, items) for c in node.cases)
            total += task_count_bound(node.default or (), items)
        elif isinstance(node, Map):
            total += items * task_count_bound(node.steps, items)
    return total


def event_bound(graph: Graph) -> int:
    """Events a complete run can need: per task attempt (3 at most, forward and undo) a reply,
    a timeout, a retry timer and a delay; plus duplicates, stale replies, cancel, deadline and
    resumes."""
    tasks = task_count_bound(graph.saga.steps, max(len(graph.input["xs"]), 2))
    return (
        2
        + tasks * 2 * 3 * 4
        + MAX_DUPLICATES
        + MAX_STALE
        + MAX_DEAD_LETTERS
        + MAX_RESUMES * (1 + 12)
    )


# ---- the driver -----------------------------------------------------------------------------


@dataclass
class Sim:
    """One random run: replies to outstanding dispatches in random order (even after the
    end), timers, duplicates, stale replies, a cancel, resumes; every input recorded."""

    graph: Graph
    run: Run
    checker: Checker
    outstanding: list[Dispatch] = field(default_factory=list)
    timers: list[ScheduleTimer] = field(default_factory=list)
    replies: list[StepReply] = field(default_factory=list)
    inputs: list[tuple[Event, datetime]] = field(default_factory=list)
    effects: set[str] = field(default_factory=set)
    """Forward steps a worker reported a success for: their effect is real."""
    children_cancelled: list[str] = field(default_factory=list)
    duplicates: int = 0
    stale: int = 0
    resumes: int = 0
    dead_lettered: list[Dispatch] = field(default_factory=list)
    cancelled: bool = False

    def apply(self, event: Event) -> Transition:
        before = self.run.instance
        self.inputs.append((event, self.run.now))
        t = self.run.send(event)  # checks seq, dispatches and determinism of this step
        for h in t.history:
            self.checker.see(h, before.status)
        self.checker.check_limits(self.graph.saga.steps, "")
        for d in t.dispatches:
            self.check_input(d)
            if d.command == CANCEL_CHILD_COMMAND:
                assert before.status is SagaStatus.RUNNING
                assert isinstance(self.graph.saga.node(d.step), ChildSaga)
                assert d.pool == CHILD_POOL
                self.children_cancelled.append(d.step)
            else:
                if before.status is not SagaStatus.RUNNING:
                    assert d.phase is COMPENSATE, f"forward {d.step} once the saga stopped"
                self.outstanding.append(d)
        stopped = self.checker.left_running_at
        if stopped is not None and before.status is SagaStatus.RUNNING:  # it stops here
            cancels = [d.step for d in t.dispatches if d.command == CANCEL_CHILD_COMMAND]
            assert sorted(cancels) == sorted(self.checker.children_to_stop)
            # a step waiting to retry will not be: it fails (abandoned) there and then
            assert not self.checker.facts.waiting, f"{self.checker.facts.waiting} still wait"
        if t.instance.status.terminal:  # its timers may be left over: they will do nothing
            assert t.dispatches == ()
        self.timers.extend(t.timers)
        return t

    def check_input(self, d: Dispatch) -> None:
        """What a command carries: an input map's values (and, to undo, the step's result),
        else a map's item, else the saga's input and results (added by the shell)."""
        node = self.graph.saga.node(d.step)
        input_map = getattr(node, "input_map", None)
        if d.command == CANCEL_CHILD_COMMAND:
            assert d.input is msgspec.UNSET
        elif input_map is not None:
            assert input_map == {"a": "input.a"}
            expected = {"a": self.graph.input["a"]}
            if d.phase is COMPENSATE:
                expected["result"] = self.run.instance.steps[d.step].result
            assert (d.input, d.with_results) == (expected, False)
        elif "/" in d.step:
            item = self.checker.item_at(split_key(d.step)[0])
            assert (d.input, d.with_results) == (item, True)
        else:
            assert (d.input, d.with_results) == (msgspec.UNSET, True)

    def answer(self, dispatch: Dispatch, outcome: Outcome) -> None:
        if outcome == "ok":
            reply = ok(dispatch.step, dispatch.attempt, dispatch.phase, {"seq": dispatch.seq})
            if dispatch.phase is FORWARD:
                self.effects.add(dispatch.step)
        else:
            retryable = outcome == "retryable"
            reply = fail(dispatch.step, dispatch.attempt, dispatch.phase, retryable=retryable)
        reply = msgspec.structs.replace(reply, seq=dispatch.seq)  # as a worker answers
        self.replies.append(reply)
        self.apply(reply)

    def duplicate(self, reply: StepReply) -> None:
        self.duplicates += 1
        assert [h.type for h in self.apply(reply).history] == ["reply_ignored"]

    def dead_letter(self, d: Dispatch) -> None:
        """The command was dead-lettered: the shell fails its attempt (DeadLettered, not
        retryable). A replay may still run it, so it stays outstanding."""
        self.dead_lettered.append(d)
        failed = fail(d.step, d.attempt, d.phase, retryable=False, type="DeadLettered")
        self.apply(msgspec.structs.replace(failed, seq=d.seq))

    def stale_failure(self, key: str, attempt: int) -> None:
        """A failure of an attempt that is over (a retry is out or waiting) changes nothing."""
        self.stale += 1
        assert [h.type for h in self.apply(fail(key, attempt)).history] == ["reply_ignored"]

    def fire(self, scheduled: ScheduleTimer) -> None:
        self.run.now = max(self.run.now, scheduled.due_at)
        fired = TimerFired(
            kind=scheduled.kind,
            step=scheduled.step,
            phase=scheduled.phase,
            attempt=scheduled.attempt,
        )
        self.apply(fired)


def drive(graph: Graph, data: st.DataObject) -> Sim:
    saga = graph.saga
    sim = Sim(graph, Run(saga, graph.input), Checker(graph))
    sim.apply(Start(input=graph.input))
    bound = event_bound(graph)
    may_cancel = data.draw(st.booleans(), label="may cancel")
    while True:
        assert len(sim.inputs) <= bound, "the saga did not end within the bound"
        status = sim.run.status
        resumable = status is SagaStatus.FAILED and sim.resumes < MAX_RESUMES
        if resumable and data.draw(st.booleans(), label="resume"):
            sim.resumes += 1
            sim.apply(Resume())
            continue
        choices: list[str] = []
        if status.terminal:
            # replies still out may arrive after the end: a late success may reopen it
            if not sim.outstanding or data.draw(st.booleans(), label="stop"):
                break
            choices.append("answer")
        else:
            if sim.outstanding:
                choices.append("answer")
            if sim.timers:
                choices.append("timer")
            assert choices, "the saga is stuck with nothing to wait for"
            if sim.replies and sim.duplicates < MAX_DUPLICATES:
                choices.append("duplicate")
            retried = [k for k, s in sim.run.instance.steps.items() if s.attempt >= 2]
            if retried and sim.stale < MAX_STALE:
                choices.append("stale")
            letters = [d for d in sim.outstanding if d not in sim.dead_lettered]
            rare = len(sim.dead_lettered) < MAX_DEAD_LETTERS
            if letters and rare and data.draw(st.integers(0, 9), label="dead?") == 0:
                choices.append("dead letter")
            if may_cancel and not sim.cancelled and data.draw(st.integers(0, 3)) == 0:
                choices.append("cancel")
        action = data.draw(st.sampled_from(choices), label="action")
        if action == "answer":
            index = data.draw(st.integers(0, len(sim.outstanding) - 1), label="dispatch")
            outcome = data.draw(st.sampled_from(WEIGHTED_OUTCOMES), label="outcome")
            sim.answer(sim.outstanding.pop(index), outcome)
        elif action == "timer":
            index = data.draw(st.integers(0, len(sim.timers) - 1), label="timer")
            sim.fire(sim.timers.pop(index))
        elif action == "duplicate":
            index = data.draw(st.integers(0, len(sim.replies) - 1), label="duplicate of")
            sim.duplicate(sim.replies[index])
        elif action == "dead letter":
            index = data.draw(st.integers(0, len(letters) - 1), label="dead letter")
            sim.dead_letter(letters[index])
        elif action == "stale":
            key = data.draw(st.sampled_from(retried), label="stale step")
            attempt = data.draw(st.integers(1, sim.run.instance.steps[key].attempt - 1))
            sim.stale_failure(key, attempt)
        else:
            sim.cancelled = True
            sim.apply(Cancel(reason="random"))
    return sim


def check_end(sim: Sim) -> None:
    """The end of a run, against the facts the history gave."""
    saga, run, facts = sim.graph.saga, sim.run, sim.checker.facts
    instance, history = run.instance, run.history
    assert instance.status.terminal
    assert [h.seq for h in history] == list(range(1, len(history) + 1))
    assert instance.seq == len(history)
    # a worker's success is never lost, and nothing else succeeded
    assert set(facts.succeeded) == sim.effects
    assert list(instance.completed) == facts.succeeded
    for key in facts.succeeded:
        assert instance.steps[key].result is not None
    # each result is the one of the attempt that decided its step, gathered where it ran
    results: dict[str, Any] = {}
    for h in history:
        if h.type in ("step_succeeded", "step_succeeded_late"):
            assert h.step is not None
            sent = [d.seq for d in run.dispatches if d.step == h.step and d.phase is FORWARD]
            assert h.data["result"]["seq"] in sent
            results[h.step] = h.data["result"]
    assert instance.results() == sim.checker.expected_results(saga.steps, "", results)
    undo = [k for k in facts.succeeded if compensable(saga, k)]
    if instance.status is SagaStatus.COMPLETED:
        assert sim.checker.left_running_at is None
        assert facts.compensation_started == []
        assert instance.failure is None
    elif instance.status is SagaStatus.COMPENSATED:
        assert sim.checker.left_running_at is not None
        assert sorted(facts.compensated) == sorted(undo)  # each exactly once (see `see`)
        assert sorted(facts.compensation_started) == sorted(undo)
        assert instance.failure is not None
    else:  # failed: only when a compensation ran out
        assert instance.status is SagaStatus.FAILED
        assert history[-1].type in ("saga_failed", "step_succeeded_late", "reply_ignored")
        assert any(h.type == "compensation_failed" for h in history)
    # children told to stop were running when the saga stopped
    for key in sim.children_cancelled:
        assert isinstance(saga.node(key), ChildSaga)


def check_leftovers(sim: Sim) -> None:
    """After the end, the timers still set, duplicates and a cancel change nothing."""
    run = sim.run
    final = run.instance
    for scheduled in sim.timers:
        run.now = max(run.now, scheduled.due_at)
        fired = TimerFired(
            kind=scheduled.kind,
            step=scheduled.step,
            phase=scheduled.phase,
            attempt=scheduled.attempt,
        )
        assert run.send(fired).history == ()
    for reply in sim.replies:
        assert [h.type for h in run.send(reply).history] == ["reply_ignored"]
    assert run.send(Cancel()).history == ()
    assert run.instance.steps == final.steps
    assert run.instance.nodes == final.nodes
    assert run.instance.status is final.status


def replay(sim: Sim) -> None:
    """The recorded inputs, applied again from a new instance, give the same run."""
    saga = sim.graph.saga
    instance = new_instance(saga, INSTANCE_ID, sim.graph.input, sim.inputs[0][1])
    history: list[HistoryEvent] = []
    for event, now in sim.inputs:
        t = decide(saga, instance, event, now)
        # as the shell stores it: the snapshot read back decides the same
        instance = msgspec.json.decode(msgspec.json.encode(t.instance), type=InstanceState)
        assert instance == t.instance
        history.extend(t.history)
    assert instance == sim.run.instance
    assert history == sim.run.history
