"""The harness's events in: what `service.events` and `persistence.events` do on the servers,
in memory.

Each event sent (by the script, or published by a saga of the run) is recorded once per
(source, id); it reaches, in each instance, the oldest wait under way that takes it, and is
kept: a wait that begins later takes the oldest kept event it matches that its instance has
not had. An event reaches an instance at most once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.definitions import WaitFor
from orchestrator.definitions.conditions import EVENT_ROOTS, MISSING, parse_path, resolve

if TYPE_CHECKING:
    from uuid import UUID

    from orchestrator.definitions import Saga
    from orchestrator.engine import InstanceState, Subscription


def takes(sub: Subscription, body: dict[str, Any]) -> bool:
    """Does the wait `sub` take the event `body`: its type, and (with a path) the value there
    equal to the wait's, as JSON compares them."""
    if body.get("type") != sub.event_type:
        return False
    if sub.path is None:
        return True
    found = resolve(body, sub.path, EVENT_ROOTS)
    return found is not MISSING and _same(found, sub.value)


def _same(found: Any, wanted: Any) -> bool:
    """JSON equality: ``true`` is not ``1`` (Python says it is)."""
    return found == wanted and isinstance(found, bool) == isinstance(wanted, bool)


@dataclass(slots=True)
class Mailbox:
    """The events a run received, and the event waits under way in each instance."""

    kept: list[dict[str, Any]] = field(default_factory=list)
    """Every event recorded, in arrival order (its index is its sequence number)."""
    seen: set[tuple[str, str]] = field(default_factory=set)
    delivered: set[tuple[int, UUID]] = field(default_factory=set)
    waits: dict[UUID, dict[str, tuple[int, Subscription]]] = field(default_factory=dict)
    """Per instance, by wait key: (when it began, in run order; its subscription)."""
    began: itertools.count[int] = field(default_factory=itertools.count)

    def record(self, body: dict[str, Any]) -> int | None:
        """Keep the event; its sequence number, or None for a copy of one already here."""
        identity = (str(body["source"]), str(body["id"]))
        if identity in self.seen:
            return None
        self.seen.add(identity)
        self.kept.append(body)
        return len(self.kept) - 1

    def open(self, instance_id: UUID, subscriptions: tuple[Subscription, ...]) -> None:
        waits = self.waits.setdefault(instance_id, {})
        for sub in subscriptions:
            waits[sub.key] = (next(self.began), sub)

    def end(self, instance_id: UUID, keys: tuple[str, ...]) -> None:
        waits = self.waits.get(instance_id, {})
        for key in keys:
            waits.pop(key, None)

    def under_way(self, instance_id: UUID, key: str) -> bool:
        return key in self.waits.get(instance_id, {})

    def reach(self, seq: int) -> list[tuple[UUID, str]]:
        """The (instance, wait) the event `seq` is delivered to now: in each instance, the
        oldest wait under way that takes it, unless the instance had it already."""
        body = self.kept[seq]
        reached: list[tuple[UUID, str]] = []
        for instance_id, waits in self.waits.items():
            taking = sorted(entry for entry in waits.values() if takes(entry[1], body))
            if taking and (seq, instance_id) not in self.delivered:
                self.delivered.add((seq, instance_id))
                reached.append((instance_id, taking[0][1].key))
        return reached

    def take_kept(self, instance_id: UUID, sub: Subscription) -> dict[str, Any] | None:
        """The oldest kept event the wait that began takes, not yet had by its instance."""
        for seq, body in enumerate(self.kept):
            if (seq, instance_id) not in self.delivered and takes(sub, body):
                self.delivered.add((seq, instance_id))
                return body
        return None


def waits_under_way(definition: Saga, state: InstanceState) -> list[tuple[str, WaitFor]]:
    """The waits of an instance still waiting (not satisfied, not timed out), by key."""
    found = []
    for key, node in state.nodes.items():
        wait = definition.find(key)
        if isinstance(wait, WaitFor) and node.status == "running" and not node.timed_out:
            found.append((key, wait))
    return found


def how_to_end(key: str, wait: WaitFor, sub: Subscription | None) -> str:
    """What one stuck wait (`key` as a script names it) waits for, and the script line that
    would send it."""
    where = f"wait {key!r}"
    if wait.signal is not None:
        return (
            f"{where} waits for signal {wait.signal!r}: add "
            f"SendSignal(name={wait.signal!r}, when_waiting={key!r}) to the script"
        )
    what = f"event {wait.event!r}"
    fields = ""
    if sub is not None and sub.path is not None:
        what += f" whose {sub.path} equals {sub.value!r}"
        fields = _fields(sub.path, sub.value)
    return (
        f"{where} waits for {what}: add SendEvent(type={wait.event!r}{fields}, "
        f"when_waiting={key!r}) to the script"
    )


def _fields(path: str, value: Any) -> str:
    """The arguments of a `SendEvent` whose value at `path` is `value`."""
    root, *rest = parse_path(path, EVENT_ROOTS)
    if not rest and root in ("subject", "source", "id"):
        return f", {root}={value!r}"
    if root == "data" and rest and all(isinstance(part, str) for part in rest):
        data: Any = value
        for part in reversed(rest):
            data = {part: data}
        return f", data={data!r}"
    return f", data=... (with {path} == {value!r})"
