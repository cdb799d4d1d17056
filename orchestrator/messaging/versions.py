"""Payload versions and the upcasters that turn old payloads into the current shape.

Every event's data and every command's input has a version (1 unless said otherwise). When a
shape changes, register a function from the old shape to the next one:

    @upcaster("order.placed", from_version=1)
    def add_currency(data):
        return {**data, "currency": "EUR"}

Readers then upcast older payloads on the way in, one version at a time (1 → 2 → 3), and the
current version of a type is one past its newest upcaster. A payload newer than any this process
knows is `UnknownVersion`: dead-lettered with that reason, never half-read. Writers stamp
`current(type)` on what they send. Commands are keyed by their command name, events by type.

Upcasters register when their module is imported: the worker app's modules, or the modules
named in `WARREN_UPCASTERS` (`load_upcaster_modules`), which every Warren process imports at start.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from orchestrator.errors import DefinitionError, MessageError
from orchestrator.errors import UnknownVersion as UnknownVersion  # raised here, rooted there

if TYPE_CHECKING:
    from collections.abc import Iterable

Upcast: TypeAlias = Callable[[Any], Any]
F = TypeVar("F", bound=Upcast)


class UpcasterError(DefinitionError, ValueError):
    """An upcaster that cannot be registered (a ``ValueError`` too)."""


class Upcasters:
    """A registry of upcasters by (type, from_version)."""

    def __init__(self) -> None:
        self._by_type: dict[str, dict[int, Upcast]] = {}

    def register(self, type: str, from_version: int, fn: Upcast) -> None:
        if not isinstance(from_version, int) or isinstance(from_version, bool) or from_version < 1:
            raise UpcasterError(
                f"upcaster {_describe(fn)} for {type!r}: from_version must be a positive "
                f"integer, not {from_version!r}"
            )
        if not callable(fn):
            raise UpcasterError(
                f"upcaster for {type!r} from version {from_version} is not callable"
            )
        known = self._by_type.setdefault(type, {})
        if from_version in known:
            raise UpcasterError(
                f"{type!r} already has an upcaster from version {from_version} "
                f"({_describe(known[from_version])}); {_describe(fn)} would be a second one: "
                "each version has one way forward"
            )
        known[from_version] = fn

    def current(self, type: str) -> int:
        """The version writers stamp: 1 + the highest `from_version` registered, 1 when none."""
        known = self._by_type.get(type)
        return max(known) + 1 if known else 1

    def check(self, type: str, version: int) -> None:
        """`UnknownVersion` when `version` is newer than this process knows for `type`."""
        current = self.current(type)
        if version > current:
            raise UnknownVersion(
                f"{type!r} payload version {version} is newer than any this process knows "
                f"(newest: {current}); deploy the upcaster(s) for it here first "
                "(WARREN_UPCASTERS or the worker app's modules)"
            )

    def upcast(self, type: str, version: int, data: Any) -> tuple[Any, int]:
        """`data` of `version` turned into the current shape, and that version.

        `UnknownVersion` when `version` is newer than known; a `MessageError` when an upcaster
        is missing from the chain or raises (the payload cannot be read: poison)."""
        self.check(type, version)
        if version < 1:
            raise MessageError(f"{type!r} payload version {version} is not a positive integer")
        current = self.current(type)
        known = self._by_type.get(type, {})
        while version < current:
            step = known.get(version)
            if step is None:
                raise MessageError(
                    f"{type!r} payload version {version} cannot be upcast: there is no upcaster "
                    f"from version {version} (the chain to {current} has a gap)"
                )
            try:
                data = step(data)
            except Exception as exc:
                raise MessageError(
                    f"upcaster {_describe(step)} failed on a {type!r} payload of version "
                    f"{version}: {exc.__class__.__name__}: {exc}"
                ) from exc
            version += 1
        return data, version

    def types(self) -> list[str]:
        return sorted(self._by_type)


UPCASTERS = Upcasters()
"""The default registry: `@upcaster` registers here, Warren's processes read it."""


def upcaster(
    type: str, *, from_version: int, registry: Upcasters | None = None
) -> Callable[[F], F]:
    """Register `fn(data) -> data`, which turns a `type` payload of `from_version` into the shape
    of `from_version + 1`. `type` is an event type or a command name."""

    def register(fn: F) -> F:
        (registry or UPCASTERS).register(type, from_version, fn)
        return fn

    return register


def load_upcaster_modules(modules: Iterable[str]) -> None:
    """Import each named module so that its `@upcaster`s register (the `WARREN_UPCASTERS`
    setting). A module that cannot be imported is a `ConfigError` naming it."""
    from orchestrator.config import ConfigError

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(
                f"WARREN_UPCASTERS names module {name!r}, which cannot be imported: {exc}"
            ) from exc


def _describe(fn: object) -> str:
    name = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if name and module else repr(fn)
