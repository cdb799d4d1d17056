"""What the travel example (examples/travel) must leave in its ledger, for the end-to-end test
(tests/e2e/test_travel.py) and the chaos run (tests/chaos/invariants.py).

A trip's rows are named by step key; the rows of its child payment saga are named under the
child's node (``pay_by_card/authorize``), so that one list tells the whole trip.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from examples.travel.workers import UNDOES
from orchestrator.engine.state import child_instance_id

BOOKINGS = ("book_flight", "book_hotel", "book_car")
CHILD = "pay_by_card"
UNDO = {step: undo for undo, step in UNDOES.items()} | {"assign_seat": "free_seat"}
"""The compensation of each step, by step name."""
NAMES = ("Ann", "Bob", "Cy", "Dee")


def name_of(step: str) -> str:
    """``seats[1]/assign_seat`` -> ``assign_seat``."""
    return step.rsplit("/", 1)[-1]


def child_of(trip_id: str) -> str:
    """The id of the payment saga a trip runs as its `pay_by_card` node."""
    return str(child_instance_id(UUID(trip_id), CHILD))


@dataclass(frozen=True)
class Trip:
    """A trip's input, and what it makes the saga do."""

    payment: str
    fail_at: str | None = None
    passengers: int = 3
    transient: dict[str, int] = field(default_factory=dict)

    def input(self, trip: str = "T") -> dict[str, Any]:
        value: dict[str, Any] = {
            "trip": trip,
            "amount": 420,
            "payment": self.payment,
            "passengers": [{"name": name} for name in NAMES[: self.passengers]],
        }
        if self.fail_at is not None:
            value["fail_at"] = self.fail_at
        if self.transient:
            value["transient_failures"] = self.transient
        return value

    @property
    def status(self) -> str:
        return "completed" if self.fail_at is None else "compensated"

    @property
    def pay_steps(self) -> list[str]:
        if self.payment == "card":
            return [f"{CHILD}/authorize", f"{CHILD}/capture"]
        return ["send_invoice"]

    @property
    def seats(self) -> list[str]:
        return [f"seats[{i}]/assign_seat" for i in range(self.passengers)]

    def paths(self) -> list[list[str]]:
        """Every path through the flow: a booking, the payment, one passenger's seat. Along a
        path each step started only after the one before it succeeded."""
        return [[booking, *self.pay_steps, seat] for booking in BOOKINGS for seat in self.seats]

    def effects(self) -> set[str]:
        """The steps that succeed: all of them, or those before the failure, and the failing
        step's siblings in a parallel or a map (they started with it)."""
        done: set[str] = set()
        stages = ((list(BOOKINGS), True), (self.pay_steps, False), (self.seats, True))
        for stage, side_by_side in stages:
            failing = [step for step in stage if self.fail_at in (step, name_of(step))]
            if not failing:
                done |= set(stage)
            elif side_by_side:
                return done | (set(stage) - set(failing))
            else:
                return done | set(stage[: stage.index(failing[0])])
        return done


@dataclass(frozen=True, order=True)
class Row:
    """One ledger row of a trip: `step` a key of the trip, or of its child under `CHILD/`."""

    id: int
    step: str
    action: str
    ref: str

    @property
    def undoes(self) -> bool:
        return self.action != name_of(self.step)


def trip_rows(trip_id: str, rows: list[tuple[int, str, str, str, str]]) -> list[Row]:
    """The rows (id, instance id, step, action, ref) of a trip and its child, in id order."""
    child = child_of(trip_id)
    return sorted(
        Row(id, step if instance == trip_id else f"{CHILD}/{step}", action, ref)
        for id, instance, step, action, ref in rows
        if instance in (trip_id, child)
    )


def ledger_problems(
    status: str, rows: list[Row], paths: list[list[str]], late: frozenset[str] = frozenset()
) -> list[str]:
    """What is wrong with a trip's ledger, whatever its input asked: an effect or an undo
    twice, an undo of what did not happen, or by another command, or of another reference; a
    compensated trip with an effect left, or undone out of order along a path (`paths`); a
    completed trip with an undo.

    A step in `late` succeeded after its last attempt timed out (`step_succeeded_late`):
    the steps before it may have been undone already, so its undo comes when its success
    does (docs/failure-handling.md, "Timeouts"), and only its order is not checked."""
    problems = []
    counts = collections.Counter((row.step, row.action) for row in rows)
    twice = {key: n for key, n in counts.items() if n > 1}
    if twice:
        problems.append(f"applied more than once: {twice}")
    effects = {row.step: row for row in rows if not row.undoes}
    undos = {row.step: row for row in rows if row.undoes}
    for step, undo in undos.items():
        if step not in effects:
            problems.append(f"{undo.action} undid {step}, which never happened")
        elif undo.action != UNDO[name_of(step)] or undo.ref != effects[step].ref:
            problems.append(f"{step} ({effects[step].ref}) undone by {undo.action} ({undo.ref})")
    if status == "completed" and undos:
        problems.append(f"completed, yet undid {sorted(undos)}")
    if status == "compensated":
        left = set(effects) - set(undos)
        if left:
            problems.append(f"compensated, yet left {sorted(left)}")
        for path in paths:
            order = [
                undos[step].id
                for step in path
                if step in undos and step in effects and step not in late
            ]
            if order != sorted(order, reverse=True):
                problems.append(f"undone out of order along {path}")
    return problems
