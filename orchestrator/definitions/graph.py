"""A saga definition as a graph, and that graph as Mermaid text: pure functions, no I/O.

`build(saga)` gives the nodes (each step and child saga, and for each parallel, choice and map
the node that opens it and the one that closes it), the forward edges between them, and the
compensation edges: the way back undo takes, from each compensable step to the compensable
steps that completed before it. `mermaid(graph)` draws it as a ``flowchart TD``: a subgraph per
parallel, choice and map, dotted arrows for compensation. Both are deterministic: the same
definition gives the same graph and the same text, in definition order.

Node ids are node names, and for what the builder adds, ids no node name can be (names never
hold a ``:``): ``:start``, ``:end``, ``<name>:join`` closing a parallel or a map and
``<name>:merge`` closing a choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec

from orchestrator.definitions.model import (
    ChildSaga,
    Choice,
    Map,
    Node,
    Parallel,
    Saga,
    Step,
    WaitFor,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "END",
    "START",
    "Graph",
    "GraphEdge",
    "GraphGroup",
    "GraphNode",
    "build",
    "mermaid",
]

START = ":start"
END = ":end"

NodeKind = Literal[
    "start", "end", "step", "child", "wait", "parallel", "choice", "map", "join", "merge"
]
EdgeKind = Literal["next", "branch", "case", "default", "item", "timeout", "join", "compensate"]
GroupKind = Literal["parallel", "choice", "map"]


class GraphNode(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: NodeKind
    label: str
    """The node's name (``start``, ``end``, ``join`` and ``merge`` for the builder's own)."""
    group: str | None = None
    """The innermost parallel, choice or map it lies in (its id); null at the top."""
    detail: str | None = None
    """What else the node says: a map's items path, a child's saga, a concurrency limit."""
    pool: str | None = None
    command: str | None = None
    compensation: str | None = None
    """The command that undoes it; null when nothing does."""
    compensation_pool: str | None = None


class GraphEdge(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    target: str
    kind: EdgeKind
    label: str | None = None
    """A branch's number, a case's condition (its text), ``default``, ``each item``."""


class GraphGroup(msgspec.Struct, frozen=True, kw_only=True):
    """A parallel, a choice or a map: the nodes from its opening node to its closing one."""

    id: str
    kind: GroupKind
    label: str
    parent: str | None = None
    """The group it is nested in; null at the top."""


class Graph(msgspec.Struct, frozen=True, kw_only=True):
    saga: str
    version: int
    nodes: list[GraphNode]
    """In definition order, depth first: a flow's opening node, its inner nodes, its closing."""
    edges: list[GraphEdge]
    """Forward: what runs after what."""
    compensation_edges: list[GraphEdge]
    """Backward: from a compensable step to the compensable steps undone after it."""
    groups: list[GraphGroup]


# An edge waiting for its target: the sequence's next node (source, kind, label).
_Exit = tuple[str, EdgeKind, str | None]


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[GraphNode] = []
        self.edges: list[GraphEdge] = []
        self.groups: list[GraphGroup] = []

    def add(self, node: GraphNode, exits: Sequence[_Exit], *, closing: bool = False) -> None:
        """Add `node` and the edges that lead to it; into a closing node they are joins."""
        self.nodes.append(node)
        for source, kind, label in exits:
            kind = "join" if closing and kind == "next" else kind
            self.edges.append(GraphEdge(source=source, target=node.id, kind=kind, label=label))

    def sequence(self, nodes: Sequence[Node], exits: list[_Exit], group: str | None) -> list[_Exit]:
        """Chain `nodes` after `exits`; the exits of the last one (`exits` when none)."""
        for node in nodes:
            exits = self.node(node, exits, group)
        return exits

    def node(self, node: Node, exits: list[_Exit], group: str | None) -> list[_Exit]:
        name = node.name
        if isinstance(node, Step):
            comp = node.compensation
            step = GraphNode(
                id=name,
                kind="step",
                label=name,
                group=group,
                pool=node.pool,
                command=node.command_name,
                compensation=comp.command if comp is not None else None,
                compensation_pool=node.compensation_pool if comp is not None else None,
            )
            self.add(step, exits)
            return [(name, "next", None)]
        if isinstance(node, ChildSaga):
            version = f"v{node.version}" if node.version is not None else "latest version"
            child = GraphNode(
                id=name,
                kind="child",
                label=name,
                group=group,
                detail=f"saga {node.saga} ({version})",
                pool=node.pool,
                command=node.command_name,
                compensation=node.compensation.command,
                compensation_pool=node.compensation_pool,
            )
            self.add(child, exits)
            return [(name, "next", None)]
        if isinstance(node, WaitFor):
            return self.wait(node, exits, group)
        inner: list[_Exit] = []
        if isinstance(node, Parallel):
            limit = node.max_concurrency
            detail = f"at most {limit} branches at once" if limit is not None else None
            self._open(node, "parallel", group, exits, detail)
            for index, branch in enumerate(node.branches, start=1):
                inner += self.sequence(branch, [(name, "branch", f"branch {index}")], name)
            closing = GraphNode(id=f"{name}:join", kind="join", label="join", group=name)
        elif isinstance(node, Choice):
            self._open(node, "choice", group, exits, None)
            for case in node.cases:
                inner += self.sequence(case.steps, [(name, "case", case.when.describe())], name)
            if node.default is not None:
                inner += self.sequence(node.default, [(name, "default", "default")], name)
            closing = GraphNode(id=f"{name}:merge", kind="merge", label="merge", group=name)
        else:
            detail = f"each item of {node.items} (at most {node.max_items}"
            if node.max_concurrency is not None:
                detail += f", {node.max_concurrency} at once"
            self._open(node, "map", group, exits, detail + ")")
            inner = self.sequence(node.steps, [(name, "item", "each item")], name)
            closing = GraphNode(id=f"{name}:join", kind="join", label="join", group=name)
        self.add(closing, inner, closing=True)
        return [(closing.id, "next", None)]

    def wait(self, node: WaitFor, exits: list[_Exit], group: str | None) -> list[_Exit]:
        """A wait, and the nodes its timeout runs (their own path on from it)."""
        if node.event is not None:
            detail = f"event {node.event}"
            if node.correlate is not None:
                detail += f" where {node.correlate} = {node.equals}"
        else:
            detail = f"signal {node.signal}"
        if node.timeout_seconds is not None:
            detail += f" (timeout {node.timeout_seconds:g} s)"
        self.add(
            GraphNode(id=node.name, kind="wait", label=node.name, group=group, detail=detail),
            exits,
        )
        if node.on_timeout is None:
            return [(node.name, "next", None)]
        timed_out = self.sequence(node.on_timeout, [(node.name, "timeout", "timed out")], group)
        return [(node.name, "next", "received"), *timed_out]

    def _open(
        self,
        node: Parallel | Choice | Map,
        kind: GroupKind,
        group: str | None,
        exits: list[_Exit],
        detail: str | None,
    ) -> None:
        self.groups.append(GraphGroup(id=node.name, kind=kind, label=node.name, parent=group))
        opening = GraphNode(
            id=node.name, kind=kind, label=node.name, group=node.name, detail=detail
        )
        self.add(opening, exits)

    def compensation_edges(self) -> list[GraphEdge]:
        """From each compensable node to the nearest compensable ones before it: undo walks
        back through the steps that have nothing to undo."""
        before: dict[str, list[str]] = {}
        for edge in self.edges:
            before.setdefault(edge.target, []).append(edge.source)
        order = {node.id: index for index, node in enumerate(self.nodes)}
        compensable = {node.id for node in self.nodes if node.compensation is not None}
        found = []
        for node in self.nodes:
            if node.id not in compensable:
                continue
            targets: set[str] = set()
            seen: set[str] = set()
            todo = list(before.get(node.id, ()))
            while todo:
                here = todo.pop()
                if here in seen:
                    continue
                seen.add(here)
                if here in compensable:
                    targets.add(here)
                else:
                    todo += before.get(here, ())
            found += [
                GraphEdge(source=node.id, target=target, kind="compensate")
                for target in sorted(targets, key=order.__getitem__, reverse=True)
            ]
        return found


def build(saga: Saga) -> Graph:
    """The graph of `saga`: nodes, forward edges, compensation edges, groups."""
    builder = _Builder()
    builder.add(GraphNode(id=START, kind="start", label="start"), ())
    exits = builder.sequence(saga.steps, [(START, "next", None)], None)
    builder.add(GraphNode(id=END, kind="end", label="end"), exits)
    return Graph(
        saga=saga.name,
        version=saga.version,
        nodes=builder.nodes,
        edges=builder.edges,
        compensation_edges=builder.compensation_edges(),
        groups=builder.groups,
    )


# ---- Mermaid ----------------------------------------------------------------------------------

# The shape of each kind of node: (before, after) its quoted text.
_SHAPES: dict[str, tuple[str, str]] = {
    "start": ("([", "])"),
    "end": ("([", "])"),
    "step": ("[", "]"),
    "child": ("[[", "]]"),
    "wait": ("[\\", "\\]"),
    "parallel": ("{{", "}}"),
    "choice": ("{", "}"),
    "map": ("[/", "/]"),
    "join": ("((", "))"),
    "merge": ("((", "))"),
}
# Characters Mermaid reads in a quoted text (entities, tags, an edge label's bars): written as
# its entity codes so that a condition or a command shows as it is.
_ESCAPES = str.maketrans(
    {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "|": "#124;", "\n": " "}
)
_INDENT = "    "


def mermaid(graph: Graph) -> str:
    """`graph` as a Mermaid ``flowchart TD``; node ids are ``n0``, ``n1``… in node order."""
    ids = {node.id: f"n{index}" for index, node in enumerate(graph.nodes)}
    groups = {group.id: f"g{index}" for index, group in enumerate(graph.groups)}
    lines = ["flowchart TD"]
    _draw_nodes(graph, ids, groups, None, 1, lines)
    for edge in graph.edges:
        label = f'|"{_text(edge.label)}"|' if edge.label else ""
        lines.append(f"{_INDENT}{ids[edge.source]} -->{label} {ids[edge.target]}")
    for edge in graph.compensation_edges:
        lines.append(f"{_INDENT}{ids[edge.source]} -.-> {ids[edge.target]}")
    return "\n".join(lines) + "\n"


def _draw_nodes(
    graph: Graph,
    ids: dict[str, str],
    groups: dict[str, str],
    within: str | None,
    depth: int,
    lines: list[str],
) -> None:
    """The nodes and the nested groups of one group (the top when `within` is None), in node
    order: a group stands where its opening node does."""
    indent = _INDENT * depth
    nested = {group.id: group for group in graph.groups if group.parent == within}
    for node in graph.nodes:
        if node.id in nested:
            group = nested[node.id]
            lines.append(
                f'{indent}subgraph {groups[group.id]} ["{group.kind} {_text(group.label)}"]'
            )
            _draw_nodes(graph, ids, groups, group.id, depth + 1, lines)
            lines.append(f"{indent}end")
        elif node.group == within:  # a group's opening node too: its group is itself
            lines.append(f"{indent}{ids[node.id]}{_shape(node)}")


def _shape(node: GraphNode) -> str:
    before, after = _SHAPES[node.kind]
    lines = [_text(node.label)]
    if node.detail:
        lines.append(_text(node.detail))
    if node.kind == "step":
        lines.append(_text(f"{node.pool}: {node.command}"))
    if node.compensation is not None and node.kind == "step":
        lines.append(_text(f"undo: {node.compensation}"))
    return f'{before}"{"<br/>".join(lines)}"{after}'


def _text(value: str | None) -> str:
    return (value or "").translate(_ESCAPES)
