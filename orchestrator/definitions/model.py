"""Saga definitions as data: frozen, keyword-only value objects that serialise to JSON.

A definition is built in Python (`Saga(...)`), validated as it is built, stored in Postgres as
JSON with a content hash, and read back into the very same objects. Nothing in it is code:
no callables, no pickles, no `eval`. Every node carries a `kind` tag so that later node kinds
(parallel groups, branches, waits) can join `Step` without changing what is stored today.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

import jsonschema
import msgspec
from msgspec import Meta

from orchestrator.definitions.conditions import (
    EVENT_ROOTS,
    Condition,
    check_condition,
    parse_path,
    paths_of,
)
from orchestrator.errors import DefinitionError

NAME = re.compile(r"[a-z][a-z0-9_.-]{0,62}")
"""What saga, step, pool and signal names look like (whole string)."""
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_.-]{0,127}")
"""What an event type looks like (whole string): ``payment.captured``. It is the routing key
on the events exchange, so no ``*`` or ``#``."""

MAX_INT4 = 2**31 - 1
"""Versions and attempt numbers are stored in int4 columns."""
MAX_DURATION_SECONDS = 365 * 24 * 3600.0
"""Every duration (timeouts, delays, deadlines, retry intervals) is at most one year: a timer
further out is almost surely a unit mistake, and it keeps every timer far inside what Python and
Postgres can represent."""
CHILD_POOL = "warren.children"
"""The pool a child saga's orders go to: the orchestrators serve it themselves."""
CHILD_COMMAND_PREFIX = "saga:"
CANCEL_CHILD_COMMAND = "warren.cancel"
"""The order a cancelled parent sends its running child."""
MAX_MAP_ITEMS = 10_000
"""The largest `Map.max_items`: one snapshot holds the state of every item."""
MAX_JSON_DEPTH = 64
"""Nesting depth of an input or an input schema: validating and storing stay well inside the
interpreter's recursion limit."""

# The bounds, in the types: the OpenAPI document shows them and decoding enforces them;
# _validate checks the same for definitions built in Python.
Version = Annotated[int, Meta(ge=1, le=MAX_INT4)]
Seconds = Annotated[float, Meta(gt=0, le=MAX_DURATION_SECONDS)]
Interval = Annotated[float, Meta(ge=0, le=MAX_DURATION_SECONDS)]
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How often, and how far apart, a failed attempt is tried again."""

    max_attempts: Annotated[int, Meta(ge=1, le=MAX_INT4)] = 3
    """Attempts in all, the first included. 1 means never retry."""
    initial_interval_seconds: Interval = 1.0
    """Delay before the second attempt."""
    backoff_coefficient: Annotated[float, Meta(ge=1)] = 2.0
    """Each further delay is the previous one times this."""
    max_interval_seconds: Interval = 60.0
    """No delay grows beyond this."""
    non_retryable_errors: tuple[str, ...] = ()
    """Error type names (as the worker reports them) that fail the step at once."""
    max_elapsed_seconds: Seconds | None = None
    """Stop retrying once the next attempt would start this long after the first one."""
    jitter: Annotated[float, Meta(ge=0, le=1)] = 0.0
    """Spread each delay by up to this fraction either way (0.2: ±20%), so that many instances
    failing together do not retry together. Deterministic per instance, step and attempt."""

    def delay_before(self, attempt: int, *, salt: str = "") -> float:
        """Seconds to wait before `attempt` (2 for the first retry); `salt` picks the jitter."""
        if attempt <= 1:
            return 0.0
        try:
            delay = self.initial_interval_seconds * self.backoff_coefficient ** (attempt - 2)
        except OverflowError:  # a very long retry: far past the cap anyway
            delay = self.max_interval_seconds
        delay = min(delay, self.max_interval_seconds)
        if self.jitter:
            digest = hashlib.sha256(f"{salt}:{attempt}".encode()).digest()
            spread = int.from_bytes(digest[:8]) / 2**64 * 2 - 1  # in [-1, 1)
            delay = min(delay * (1 + self.jitter * spread), self.max_interval_seconds)
        return float(delay)

    def _check(self, where: str) -> None:
        numbers = (
            self.initial_interval_seconds,
            self.max_interval_seconds,
            self.backoff_coefficient,
            self.jitter,
        )
        if not all(math.isfinite(n) for n in numbers):
            raise DefinitionError(
                f"{where}: retry intervals and coefficient must be finite numbers"
            )
        if self.max_attempts < 1:
            raise DefinitionError(f"{where}: retry.max_attempts must be at least 1")
        if self.max_attempts > MAX_INT4:
            raise DefinitionError(f"{where}: retry.max_attempts must be at most {MAX_INT4}")
        if self.initial_interval_seconds < 0 or self.max_interval_seconds < 0:
            raise DefinitionError(f"{where}: retry intervals cannot be negative")
        for field in ("initial_interval_seconds", "max_interval_seconds"):
            _check_duration(getattr(self, field), where, f"retry.{field}", zero=True)
        if self.backoff_coefficient < 1:
            raise DefinitionError(f"{where}: retry.backoff_coefficient must be at least 1")
        _check_duration(self.max_elapsed_seconds, where, "retry.max_elapsed_seconds")
        if not 0 <= self.jitter <= 1:
            raise DefinitionError(f"{where}: retry.jitter must be between 0 and 1")


DEFAULT_STEP_RETRY = RetryPolicy()
# A compensation must eventually succeed: it keeps trying, every 30 s at most, for 15 minutes.
DEFAULT_COMPENSATION_RETRY = RetryPolicy(
    max_attempts=10_000,
    initial_interval_seconds=1.0,
    backoff_coefficient=2.0,
    max_interval_seconds=30.0,
    max_elapsed_seconds=900.0,
)


class Compensation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The command that undoes a completed step."""

    command: str
    """Handler name on the worker side, e.g. ``release_credit``."""
    pool: str | None = None
    """Worker pool that runs it; the step's own pool when not given."""
    retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    timeout_seconds: Seconds | None = None


SagaOutcome = Literal["completed", "compensated", "failed"]


class Emit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A domain event the saga publishes: on a saga, when it ends (`on`); on a node, when that
    node succeeds. Published through the outbox with the transition that caused it."""

    type: str
    """The event type, also its routing key on the events exchange: ``order.completed``."""
    data: dict[str, str] = {}
    """The event's data, key by key, from paths (``{"order_id": "input.order_id"}``)."""
    on: SagaOutcome | None = None
    """On a saga: the end it is published at. On a node: not given (it is its success)."""
    dataversion: Annotated[int, Meta(ge=1, le=MAX_INT4)] = 1
    """The version of the data's shape, for its consumers' upcasters."""


class Trigger(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Start the saga for each event of a type (that `when` accepts): once per event id,
    however often the event is delivered. Paths here read the event: ``data.order_id``,
    ``subject``, ``source``, ``id``, ``type``, ``time``."""

    event: str
    when: Condition | None = None
    input_map: dict[str, str] | None = None
    """The instance's input, key by key, from paths; the event's data when not given."""
    key: str | None = None
    """Path of the business key, stored as the instance's correlation key (to find it)."""


class _Node(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="kind"
):
    """What every node kind is: stored as data, tagged with its kind (`kind`)."""


class Step(_Node, frozen=True, kw_only=True, tag="step"):
    """One forward action of a saga, run as a command by a worker pool."""

    name: str
    """Unique within the saga; also the handler name unless `command` is given."""
    pool: str
    """Worker pool (one RabbitMQ queue) that runs the command."""
    command: str | None = None
    compensation: Compensation | None = None
    retry: RetryPolicy = DEFAULT_STEP_RETRY
    timeout_seconds: Seconds | None = None
    """Start-to-close time of one attempt; past it the attempt counts as failed."""
    delay_seconds: Seconds | None = None
    """Run no earlier than this long after the step before it completed."""
    input_map: dict[str, str] | None = None
    """The command's input, key by key, from paths (``{"order": "input.order_id"}``); the
    command then carries this and no results. Without it a command carries the saga's input
    (inside a `Map`: the item) and every result so far."""
    emits: Sequence[Emit] = ()
    """Events published when the step succeeds."""

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "emits", tuple(self.emits))

    @property
    def command_name(self) -> str:
        return self.command or self.name

    @property
    def compensation_pool(self) -> str:
        assert self.compensation is not None
        return self.compensation.pool or self.pool


class Parallel(_Node, frozen=True, kw_only=True, tag="parallel"):
    """Branches that run at once, each a sequence of nodes; done when every branch is.

    When a step fails for good anywhere, no new step starts in any branch; steps in flight are
    waited for, then every step that succeeded is compensated, newest first."""

    name: str
    branches: Sequence[Sequence[Node]]
    max_concurrency: Annotated[int, Meta(ge=1, le=MAX_INT4)] | None = None
    """Branches running at once at most (in order); all of them when not given."""

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "branches", tuple(tuple(b) for b in self.branches))


class Case(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One case of a `Choice`: its nodes run when `when` holds (and no earlier case's did)."""

    name: str
    when: Condition
    steps: Sequence[Node]

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "steps", tuple(self.steps))


class Choice(_Node, frozen=True, kw_only=True, tag="choice"):
    """The first case whose condition holds runs, else `default`; the history records which
    and why. With no case holding and no default, the node fails (and the saga compensates)."""

    name: str
    cases: Sequence[Case]
    default: Sequence[Node] | None = None

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "cases", tuple(self.cases))
        if self.default is not None:
            msgspec.structs.force_setattr(self, "default", tuple(self.default))


class Map(_Node, frozen=True, kw_only=True, tag="map"):
    """`steps` once per item of the list at `items` (a path), in item order as far as
    `max_concurrency` allows; results gathered as a list, in item order. An item whose steps
    fail for good fails the saga: the completed items (and what came before) are undone."""

    name: str
    items: str
    """Path of the list, e.g. ``input.passengers``."""
    steps: Sequence[Node]
    max_concurrency: Annotated[int, Meta(ge=1, le=MAX_INT4)] | None = None
    max_items: Annotated[int, Meta(ge=0, le=MAX_MAP_ITEMS)] = 100
    """More items than this fail the node rather than flood the workers."""

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "steps", tuple(self.steps))


class ChildSaga(_Node, frozen=True, kw_only=True, tag="child"):
    """Start another registered saga and wait for its end; its results become this node's.

    Undoing this node undoes the child (its own compensations, newest first); a child that
    compensates or fails fails this node; cancelling the parent cancels the child."""

    name: str
    saga: str
    version: Version | None = None
    """Pinned version; the newest registered when the child starts, if not given."""
    input_map: dict[str, str] | None = None
    """The child's input from paths; the parent's input when not given."""
    emits: Sequence[Emit] = ()
    """Events published when the child saga completed."""

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "emits", tuple(self.emits))

    # What the engine asks of a node it dispatches (as of a `Step`): a child's orders go to
    # the orchestrators' own pool, once each; the child saga retries its own steps.
    pool: ClassVar[str] = CHILD_POOL
    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=1)
    timeout_seconds: ClassVar[float | None] = None
    delay_seconds: ClassVar[float | None] = None
    compensation_pool: ClassVar[str] = CHILD_POOL

    @property
    def command_name(self) -> str:
        return f"{CHILD_COMMAND_PREFIX}{self.saga}"

    @property
    def compensation(self) -> Compensation:
        return Compensation(command=self.command_name, pool=CHILD_POOL, retry=self.retry)


class WaitFor(_Node, frozen=True, kw_only=True, tag="wait"):
    """Pause this branch until an event or a signal arrives; what arrived becomes the node's
    result (``results.<name>``: the event's ``id``, ``source``, ``type``, ``subject``, ``time``
    and ``data``, or the signal's ``name``, ``id`` and ``data``).

    An event counts when its type is `event` and, with `correlate`, when the value at that
    path in the event equals the value at `equals` in the instance's data when the wait
    begins (``correlate="data.order_id", equals="input.order_id"``). One that arrived before
    the wait began (within the retention) counts too. A signal is sent to one instance by
    name (`POST /v1/instances/{id}/signals/{name}`); one sent early is kept until the wait.

    Past `timeout_seconds`, the node fails and the saga compensates, or, with `on_timeout`,
    those nodes run and the saga goes on after the wait."""

    name: str
    event: str | None = None
    signal: str | None = None
    correlate: str | None = None
    """Path into the event whose value must equal `equals`'s."""
    equals: str | None = None
    """Path into the instance's data (``input.order_id``, ``results.charge.payment_id``)."""
    timeout_seconds: Seconds | None = None
    on_timeout: Sequence[Node] | None = None
    """What runs when the wait times out (may be empty: go on); without it, the node fails."""
    emits: Sequence[Emit] = ()
    """Events published when the wait is satisfied."""

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "emits", tuple(self.emits))
        if self.on_timeout is not None:
            msgspec.structs.force_setattr(self, "on_timeout", tuple(self.on_timeout))


# The node kinds a saga is built from; a task is one the engine dispatches.
Node = Step | Parallel | Choice | Map | ChildSaga | WaitFor
Task = Step | ChildSaga


class Saga(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, dict=True):
    """A versioned saga definition: validated when built, stored as data."""

    name: str
    version: Version
    steps: Sequence[Node]
    """The nodes in order (a list is accepted and stored as a tuple)."""
    input_schema: dict[str, Any] | None = None
    """JSON Schema (2020-12) the input must satisfy to start an instance."""
    description: str = ""
    deadline_seconds: Seconds | None = None
    """Past this long after its start, a still-running instance stops and compensates."""
    emits: Sequence[Emit] = ()
    """Events published when an instance ends (each `Emit` says at which end)."""
    triggers: Sequence[Trigger] = ()
    """Events that start an instance, one per event."""
    event_schemas: dict[str, dict[str, Any]] | None = None
    """JSON Schema (2020-12) of the data of event types: an event that does not match is
    refused (422 at the API, dead-lettered from the broker)."""

    def __post_init__(self) -> None:
        for field in ("steps", "emits", "triggers"):  # accept any sequence; store a tuple
            value = getattr(self, field)
            if not isinstance(value, tuple):
                msgspec.structs.force_setattr(self, field, tuple(value))
        _validate(self)
        # Not a field (dict=True keeps it out of the stored JSON): every node by name.
        self.__dict__["_nodes"] = {node.name: node for node in walk(self.steps)}

    _nodes: ClassVar[dict[str, Node]]

    def node(self, key: str) -> Node:
        """The node a key names (a node's name, or a map item's ``seats[0]/assign``)."""
        node = self._nodes.get(node_name(key))
        if node is None:
            raise DefinitionError(f"saga {self.name!r} has no node {key!r}")
        return node

    def step(self, key: str) -> Task:
        """The step (or child saga) a key names."""
        node = self.find(key)
        if node is None:
            raise DefinitionError(f"saga {self.name!r} has no step {key!r}")
        if not isinstance(node, Step | ChildSaga):
            raise DefinitionError(f"saga {self.name!r}: {key!r} is a {node_kind(node)}, not a step")
        return node

    def find(self, key: str) -> Node | None:
        return self._nodes.get(node_name(key))

    def pool_of(self, key: str, *, forward: bool) -> str | None:
        """The pool a step (or child saga) phase runs on; None for a key that names no task,
        or a compensation the step does not have."""
        task = self.find(key)
        if not isinstance(task, Step | ChildSaga):
            return None
        if forward:
            return task.pool
        return task.compensation_pool if task.compensation is not None else None

    def timeout_of(self, key: str, *, forward: bool) -> float | None:
        """How long one attempt of a step (or child saga) phase may take; None: no limit."""
        task = self.find(key)
        if not isinstance(task, Step | ChildSaga):
            return None
        if forward:
            return task.timeout_seconds
        return task.compensation.timeout_seconds if task.compensation is not None else None

    def walk(self) -> list[Node]:
        """Every node, depth first, in definition order."""
        return list(self._nodes.values())

    @property
    def tasks(self) -> list[Task]:
        """Every step and child saga, depth first, in definition order."""
        return [node for node in self._nodes.values() if isinstance(node, Step | ChildSaga)]

    @property
    def is_linear(self) -> bool:
        return all(isinstance(node, Step) for node in self.steps)

    def to_json(self) -> bytes:
        """The stored form, whose hash says whether two definitions are the same. A field
        added since the first release is left out while it holds its default, so that a
        definition registered before it keeps its hash (and registering it again changes
        nothing)."""
        return msgspec.json.encode(_without_later_defaults(msgspec.to_builtins(self)))

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()

    @property
    def pools(self) -> frozenset[str]:
        pools: set[str] = set()
        for node in self._nodes.values():
            if isinstance(node, Step):
                pools.add(node.pool)
                if node.compensation is not None:
                    pools.add(node.compensation_pool)
            elif isinstance(node, ChildSaga):
                pools.add(CHILD_POOL)
        return frozenset(pools)

    @classmethod
    def from_json(cls, data: bytes | str) -> Saga:
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise DefinitionError(f"stored definition is not valid: {exc}") from exc


_LATER_FIELDS: dict[str, Any] = {
    "input_map": None,
    "emits": [],
    "triggers": [],
    "event_schemas": None,
}
"""Fields added since the first release, with their defaults."""


def _without_later_defaults(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: _without_later_defaults(inner)
            for key, inner in sorted(value.items())
            if not (key in _LATER_FIELDS and _is_default(inner, _LATER_FIELDS[key]))
        }
    if isinstance(value, list | tuple):
        return [_without_later_defaults(inner) for inner in value]
    return value


def _is_default(value: Any, default: Any) -> bool:
    """`value` is the default (an empty sequence is, whether a list or a tuple)."""
    if isinstance(value, list | tuple) and isinstance(default, list):
        return list(value) == default
    return bool(value == default)


def node_name(key: str) -> str:
    """The node a state key is of: a map item's keys are prefixed ``map[i]/``."""
    return key.rsplit("/", 1)[-1]


def node_kind(node: Node) -> str:
    return type(node).__struct_config__.tag  # type: ignore[return-value]


def children_of(node: Node) -> list[tuple[str, Sequence[Node]]]:
    """The sequences directly inside a node, each with a label: a parallel's branches
    (``branch 1``…), a choice's cases (by name, then ``default``), a map's body (``item``)."""
    if isinstance(node, Parallel):
        return [(f"branch {i + 1}", branch) for i, branch in enumerate(node.branches)]
    if isinstance(node, Choice):
        cases = [(case.name, case.steps) for case in node.cases]
        return cases + ([("default", node.default)] if node.default is not None else [])
    if isinstance(node, Map):
        return [("item", node.steps)]
    if isinstance(node, WaitFor) and node.on_timeout is not None:
        return [("on timeout", node.on_timeout)]
    return []


def walk(nodes: Sequence[Node]) -> list[Node]:
    found: list[Node] = []
    for node in nodes:
        found.append(node)
        for _, inner in children_of(node):
            found += walk(inner)
    return found


def _validate(saga: Saga) -> None:
    if not NAME.fullmatch(saga.name):
        raise DefinitionError(
            f"saga name {saga.name!r} must be lowercase letters, digits, '_', '.', '-' "
            "and start with a letter"
        )
    if saga.version < 1:
        raise DefinitionError(f"saga {saga.name!r}: version must be 1 or more, got {saga.version}")
    if saga.version > MAX_INT4:
        raise DefinitionError(f"saga {saga.name!r}: version must be at most {MAX_INT4}")
    if not saga.steps:
        raise DefinitionError(f"saga {saga.name!r} has no steps; give it at least one Step")
    _validate_nodes(saga.steps, f"saga {saga.name!r}", set(), in_map=False)
    _check_duration(saga.deadline_seconds, f"saga {saga.name!r}", "deadline_seconds")
    _validate_events(saga, f"saga {saga.name!r}")
    problem = unstorable(msgspec.to_builtins(saga))
    if problem is not None:
        raise DefinitionError(f"saga {saga.name!r}: {problem}")
    if saga.input_schema is not None:
        _check_schema(saga.input_schema, f"saga {saga.name!r}", "input_schema")


def _validate_nodes(nodes: Sequence[Node], where: str, seen: set[str], *, in_map: bool) -> None:
    for node in nodes:
        if not isinstance(node, Step | Parallel | Choice | Map | ChildSaga | WaitFor):
            raise DefinitionError(
                f"{where}: {node!r} is not a node; use Step, Parallel, Choice, Map, ChildSaga "
                "or WaitFor"
            )
        here = f"{where}, {node_kind(node)} {node.name!r}"
        if not NAME.fullmatch(node.name):
            raise DefinitionError(
                f"{here}: {node_kind(node)} names must look like 'reserve_credit'"
            )
        if node.name in seen:
            raise DefinitionError(f"{where}: {node_kind(node)} name {node.name!r} is used twice")
        seen.add(node.name)
        _validate_node(node, here, in_map=in_map)
        for label, inner in children_of(node):
            if not inner and not isinstance(node, Choice | WaitFor):
                raise DefinitionError(f"{here}: {label} has no nodes")
            _validate_nodes(inner, here, seen, in_map=in_map or isinstance(node, Map))
        for path in (getattr(node, "input_map", None) or {}).values():
            _check_path(path, here, in_map=in_map)
        for emit in getattr(node, "emits", ()):
            _check_emit(emit, here, in_map=in_map, at_end=False)


def _validate_node(node: Node, here: str, *, in_map: bool) -> None:
    """What a node of each kind must satisfy on its own (its inner nodes are checked apart)."""
    if isinstance(node, Step):
        _validate_step(node, here)
    elif isinstance(node, ChildSaga):
        if not NAME.fullmatch(node.saga):
            raise DefinitionError(f"{here}: saga {node.saga!r} is not a saga name")
    elif isinstance(node, Map):
        _check_path(node.items, here, in_map=in_map)
    elif isinstance(node, WaitFor):
        _validate_wait(node, here, in_map=in_map)
    elif isinstance(node, Choice):
        if not node.cases:
            raise DefinitionError(f"{here}: give at least one Case")
        names = [case.name for case in node.cases]
        if len(set(names)) != len(names) or "default" in names:
            raise DefinitionError(f"{here}: case names must be unique and not 'default'")
        for case in node.cases:
            check_condition(case.when, f"{here}, case {case.name!r}")
            _check_condition_paths(case.when, f"{here}, case {case.name!r}", in_map)
    elif not node.branches:
        raise DefinitionError(f"{here}: give at least one branch")


def _validate_wait(node: WaitFor, here: str, *, in_map: bool) -> None:
    if (node.event is None) == (node.signal is None):
        raise DefinitionError(f"{here}: give either event= (an event type) or signal= (a name)")
    if node.event is not None:
        _check_event_type(node.event, here)
    if node.signal is not None and not NAME.fullmatch(node.signal):
        raise DefinitionError(f"{here}: signal {node.signal!r} must look like 'approved'")
    if (node.correlate is None) != (node.equals is None):
        raise DefinitionError(
            f"{here}: correlate= (a path in the event) and equals= (a path in the saga's "
            "data) go together"
        )
    if node.correlate is not None:
        if node.signal is not None:
            raise DefinitionError(f"{here}: a signal is sent to one instance: no correlate=")
        _check_event_path(node.correlate, here)
        assert node.equals is not None
        _check_path(node.equals, here, in_map=in_map)
    _check_timeout(node.timeout_seconds, here)
    if node.on_timeout is not None and node.timeout_seconds is None:
        raise DefinitionError(f"{here}: on_timeout= needs timeout_seconds=")


def _check_event_type(event_type: str, where: str) -> None:
    if not isinstance(event_type, str) or not EVENT_TYPE.fullmatch(event_type):
        raise DefinitionError(
            f"{where}: event type {event_type!r} must look like 'payment.captured' (lowercase "
            "letters, digits, '_', '.', '-', starting with a letter)"
        )


def _check_event_path(path: str, where: str) -> None:
    try:
        parse_path(path, EVENT_ROOTS)
    except DefinitionError as exc:
        raise DefinitionError(f"{where}: {exc}") from None


def _check_emit(emit: Emit, where: str, *, in_map: bool, at_end: bool) -> None:
    here = f"{where}, emit {emit.type!r}"
    _check_event_type(emit.type, here)
    if at_end and emit.on is None:
        raise DefinitionError(f"{here}: a saga's emit says when: on='completed', ... ")
    if not at_end and emit.on is not None:
        raise DefinitionError(f"{here}: a node's emit is published when it succeeds: no on=")
    for path in emit.data.values():
        _check_path(path, here, in_map=in_map)


def _validate_events(saga: Saga, where: str) -> None:
    """The saga's emits, triggers and event schemas."""
    for emit in saga.emits:
        _check_emit(emit, where, in_map=False, at_end=True)
    for trigger in saga.triggers:
        here = f"{where}, trigger on {trigger.event!r}"
        _check_event_type(trigger.event, here)
        if trigger.when is not None:
            check_condition(trigger.when, here, EVENT_ROOTS)
        for path in [*(trigger.input_map or {}).values(), *filter(None, [trigger.key])]:
            _check_event_path(path, here)
    for event_type, schema in (saga.event_schemas or {}).items():
        _check_event_type(event_type, f"{where}, event_schemas")
        _check_schema(schema, where, f"event_schemas[{event_type!r}]")


def _check_schema(schema: dict[str, Any], where: str, label: str) -> None:
    _check_refs(schema, where, label)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise DefinitionError(
            f"{where}: {label} is not a valid JSON Schema: {exc.message}"
        ) from exc


def _check_path(path: str, where: str, *, in_map: bool) -> None:
    try:
        root = parse_path(path)[0]
    except DefinitionError as exc:
        raise DefinitionError(f"{where}: {exc}") from None
    if root in ("item", "index") and not in_map:
        raise DefinitionError(f"{where}: path {path!r} reads {root!r}, which exists only in a Map")


def _check_condition_paths(condition: Condition, where: str, in_map: bool) -> None:
    for path in paths_of(condition):
        _check_path(path, where, in_map=in_map)


def _validate_step(step: Step, where: str) -> None:
    _check_pool(step.pool, where)
    if step.command is not None and not step.command.strip():
        raise DefinitionError(f"{where}: command is empty; omit it to use the step name")
    step.retry._check(where)
    _check_timeout(step.timeout_seconds, where)
    _check_duration(step.delay_seconds, where, "delay_seconds")
    comp = step.compensation
    if comp is not None:
        if not comp.command.strip():
            raise DefinitionError(f"{where}: the compensation names no command")
        if comp.pool is not None:
            _check_pool(comp.pool, where)
        comp.retry._check(f"{where} (compensation)")
        _check_timeout(comp.timeout_seconds, f"{where} (compensation)")


def _check_duration(value: float | None, where: str, field: str, *, zero: bool = False) -> None:
    if value is None:
        return
    if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
        raise DefinitionError(f"{where}: {field} must be positive and finite")
    if value > MAX_DURATION_SECONDS:
        raise DefinitionError(
            f"{where}: {field} is {value:g} s; durations are at most "
            f"{MAX_DURATION_SECONDS:.0f} s (one year)"
        )


def _check_timeout(timeout: float | None, where: str) -> None:
    _check_duration(timeout, where, "timeout_seconds")


def _check_refs(schema: Any, where: str, label: str = "input_schema") -> None:
    """Only references inside the schema itself ('#/$defs/…'): inputs are validated with no
    retrieval at all, so a reference to a URL could never resolve (and must never be fetched)."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in _REF_KEYWORDS and isinstance(value, str) and not value.startswith("#"):
                raise DefinitionError(
                    f"{where}: {label} refers to {value!r} ({key}); only references "
                    "inside the schema are allowed, such as '#/$defs/amount'"
                )
            _check_refs(value, where, label)
    elif isinstance(schema, list):
        for item in schema:
            _check_refs(item, where, label)


def unstorable(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why a JSON value cannot be stored as Postgres jsonb / text (a NUL character, a lone
    surrogate, nesting deeper than `max_depth`), naming where; None when it can."""

    def walk(item: Any, path: list[str]) -> str | None:
        where = "/".join(path) or "(root)"
        if len(path) > max_depth:
            return f"{where}: nested deeper than {max_depth} levels"
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return f"{where}: text holds a NUL character or a lone surrogate"
        elif isinstance(item, dict):
            for key, inner in item.items():
                if isinstance(key, str) and _UNSTORABLE.search(key):
                    return f"{where}: key {key!r} holds a NUL character or a lone surrogate"
                found = walk(inner, [*path, str(key)])
                if found:
                    return found
        elif isinstance(item, (list, tuple)):
            for index, inner in enumerate(item):
                found = walk(inner, [*path, str(index)])
                if found:
                    return found
        return None

    return walk(value, [])


def _check_pool(pool: str, where: str) -> None:
    if not NAME.fullmatch(pool):
        raise DefinitionError(f"{where}: pool {pool!r} must look like 'payments'")
