"""Paths into a saga's data and the conditions of a `Choice`: data, never code.

A path names one value in the data the engine sees when it runs a node:
``input.order.method``, ``results.book_flight.price``, ``results.seats[1].assign``, ``item.id``.
Its first segment is the root: ``input`` (the saga's input), ``results`` (the results of the
steps completed so far, by node name; a map's as a list in item order), ``item`` and ``index``
(inside a map: the current item and its position).

A condition compares values found by paths (`field("input.amount") > 100`), tests membership
(`field("input.country").is_in(["FR", "DE"])`) or presence (`field("input.coupon").exists()`),
and combines with ``&``, ``|`` and ``~``. It is stored as JSON and evaluated by the engine; its
`describe()` text is what the history records as the reason a case was taken.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from orchestrator.errors import DefinitionError

ROOTS = frozenset({"input", "results", "events", "item", "index"})
EVENT_ROOTS = frozenset({"id", "source", "type", "subject", "time", "data"})
"""The roots of a path into a received event (a `WaitFor`'s correlation, a `Trigger`'s
mappings): its CloudEvents attributes and its data."""
_ANY_ROOT = ROOTS | EVENT_ROOTS
"""Evaluating a path accepts either kind: which roots a path may use where is checked when the
definition is built."""
_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")
MISSING: Any = msgspec.UNSET
"""What a path finds where there is nothing."""

Operator = Literal["==", "!=", "<", "<=", ">", ">="]


def parse_path(path: str, roots: frozenset[str] = ROOTS) -> list[str | int]:
    """``results.seats[1].assign`` -> ['results', 'seats', 1, 'assign']; DefinitionError when
    the path is malformed or starts at a root not in `roots`."""
    parts: list[str | int] = []
    if not isinstance(path, str) or not path:
        raise DefinitionError(f"path {path!r} is empty; write it like 'input.order_id'")
    for segment in path.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            raise DefinitionError(
                f"path {path!r}: {segment!r} is not a name optionally followed by [index]"
            )
        parts.append(match.group(1))
        parts.extend(int(i) for i in _INDEX.findall(match.group(2)))
    if parts[0] not in roots:
        raise DefinitionError(f"path {path!r} must start with one of {', '.join(sorted(roots))}")
    return parts


def resolve(data: Mapping[str, Any], path: str, roots: frozenset[str] = _ANY_ROOT) -> Any:
    """The value at `path` in `data` (keyed by root), or MISSING."""
    value: Any = data
    for part in parse_path(path, roots):
        if isinstance(part, int):
            if not isinstance(value, list | tuple) or part >= len(value):
                return MISSING
            value = value[part]
        elif isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return MISSING
    return value


def map_input(
    data: Mapping[str, Any], mapping: Mapping[str, str], roots: frozenset[str] = _ANY_ROOT
) -> dict[str, Any]:
    """A command's input from paths: each key gets the value at its path (null when absent)."""
    out: dict[str, Any] = {}
    for key, path in mapping.items():
        value = resolve(data, path, roots)
        out[key] = None if value is MISSING else value
    return out


class _Combinable:
    def __and__(self, other: Condition) -> All:
        return All(of=(self, other))  # type: ignore[arg-type]

    def __or__(self, other: Condition) -> AnyOf:
        return AnyOf(of=(self, other))  # type: ignore[arg-type]

    def __invert__(self) -> Not:
        return Not(of=self)  # type: ignore[arg-type]


class Compare(msgspec.Struct, _Combinable, frozen=True, kw_only=True, tag="compare"):
    """The value at `path` compared with `value`. Ordering between values of different kinds
    (a number and a text) is false, as is any comparison with a missing value but `!=`."""

    path: str
    op: Operator
    value: Any

    def holds(self, data: Mapping[str, Any]) -> bool:
        found = resolve(data, self.path)
        if self.op == "==":
            return found is not MISSING and _same(found, self.value)
        if self.op == "!=":
            return found is MISSING or not _same(found, self.value)
        if found is MISSING or not _orderable(found, self.value):
            return False
        return bool(_ORDER[self.op](found, self.value))

    def describe(self) -> str:
        return f"{self.path} {self.op} {_show(self.value)}"


class In(msgspec.Struct, _Combinable, frozen=True, kw_only=True, tag="in"):
    """The value at `path` is one of `values`."""

    path: str
    values: tuple[Any, ...]

    def holds(self, data: Mapping[str, Any]) -> bool:
        found = resolve(data, self.path)
        return found is not MISSING and any(_same(found, v) for v in self.values)

    def describe(self) -> str:
        return f"{self.path} in [{', '.join(_show(v) for v in self.values)}]"


class Exists(msgspec.Struct, _Combinable, frozen=True, kw_only=True, tag="exists"):
    """Something (even null) is at `path`."""

    path: str

    def holds(self, data: Mapping[str, Any]) -> bool:
        return resolve(data, self.path) is not MISSING

    def describe(self) -> str:
        return f"{self.path} exists"


class All(msgspec.Struct, _Combinable, frozen=True, kw_only=True, tag="all"):
    of: tuple[Condition, ...]

    def holds(self, data: Mapping[str, Any]) -> bool:
        return all(c.holds(data) for c in self.of)

    def describe(self) -> str:
        return " and ".join(_grouped(c) for c in self.of)


class AnyOf(msgspec.Struct, _Combinable, frozen=True, kw_only=True, tag="any"):
    of: tuple[Condition, ...]

    def holds(self, data: Mapping[str, Any]) -> bool:
        return any(c.holds(data) for c in self.of)

    def describe(self) -> str:
        return " or ".join(_grouped(c) for c in self.of)


class Not(msgspec.Struct, _Combinable, frozen=True, kw_only=True, tag="not"):
    of: Condition

    def holds(self, data: Mapping[str, Any]) -> bool:
        return not self.of.holds(data)

    def describe(self) -> str:
        return f"not ({self.of.describe()})"


Condition = Compare | In | Exists | All | AnyOf | Not


class field:
    """Builds conditions on the value at `path`."""

    def __init__(self, path: str) -> None:
        # Any root here: a Choice's condition reads the saga's data, a Trigger's the event;
        # the definition checks which roots its conditions use when it is built.
        parse_path(path, _ANY_ROOT)
        self.path = path

    def __eq__(self, value: object) -> Compare:  # type: ignore[override]
        return Compare(path=self.path, op="==", value=value)

    def __ne__(self, value: object) -> Compare:  # type: ignore[override]
        return Compare(path=self.path, op="!=", value=value)

    def __lt__(self, value: object) -> Compare:
        return Compare(path=self.path, op="<", value=value)

    def __le__(self, value: object) -> Compare:
        return Compare(path=self.path, op="<=", value=value)

    def __gt__(self, value: object) -> Compare:
        return Compare(path=self.path, op=">", value=value)

    def __ge__(self, value: object) -> Compare:
        return Compare(path=self.path, op=">=", value=value)

    def is_in(self, values: Sequence[Any]) -> In:
        return In(path=self.path, values=tuple(values))

    def exists(self) -> Exists:
        return Exists(path=self.path)

    __hash__ = None  # type: ignore[assignment]


def check_condition(condition: Condition, where: str, roots: frozenset[str] = ROOTS) -> None:
    """Every path well formed (starting at one of `roots`); combinations not empty."""
    if isinstance(condition, Compare | In | Exists):
        try:
            parse_path(condition.path, roots)
        except DefinitionError as exc:
            raise DefinitionError(f"{where}: {exc}") from None
        if isinstance(condition, Compare) and condition.op not in _OPERATORS:
            raise DefinitionError(f"{where}: unknown operator {condition.op!r}")
    elif isinstance(condition, All | AnyOf):
        if not condition.of:
            raise DefinitionError(f"{where}: an all/any condition needs at least one part")
        for part in condition.of:
            check_condition(part, where, roots)
    elif isinstance(condition, Not):
        check_condition(condition.of, where, roots)
    else:
        raise DefinitionError(f"{where}: {condition!r} is not a condition; build one with field()")


def paths_of(condition: Condition) -> list[str]:
    """Every path a condition reads."""
    if isinstance(condition, All | AnyOf):
        return [path for part in condition.of for path in paths_of(part)]
    if isinstance(condition, Not):
        return paths_of(condition.of)
    return [condition.path]


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; in the data's JSON they differ.
    return isinstance(a, bool) is isinstance(b, bool) and bool(a == b)


def _orderable(a: Any, b: Any) -> bool:
    numbers = isinstance(a, int | float) and isinstance(b, int | float)
    numbers = numbers and not isinstance(a, bool) and not isinstance(b, bool)
    return numbers or (isinstance(a, str) and isinstance(b, str))


def _show(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _grouped(condition: Condition) -> str:
    text = condition.describe()
    return f"({text})" if isinstance(condition, All | AnyOf) else text


_ORDER = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_OPERATORS = frozenset({"==", "!=", *_ORDER})
