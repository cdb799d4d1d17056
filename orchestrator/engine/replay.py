"""Replay: the history is the record, the snapshot an optimisation.

The shell keeps, on the first history row of each transition, the engine event that caused it
(its `Cause`). `replay_history` runs those events again through `new_instance` and `decide`,
each at the time its transition was recorded, compares transition by transition what the
engine records now with what it recorded then, and at the end the rebuilt snapshot with the
stored one. Pure: the shell reads the rows and the snapshot, and reports the `Verdict`.

Generic over `Event`: a new kind of event is replayed as soon as it is in the union.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import msgspec

from orchestrator.engine import decide, new_instance  # not the module `decide`: the function
from orchestrator.engine.state import (
    Event,
    InstanceState,
    ParentLink,
    SnapshotTooNew,
    Start,
    upgraded,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    from orchestrator.definitions import Saga
    from orchestrator.engine.state import HistoryEvent


class Cause(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What caused a transition, as `warren.history.cause` keeps it on the transition's first
    row: ``{"event": {"event": "step_reply", ...}}``; a start's also has ``"parent"``, the
    link `new_instance` takes when a parent saga's node started it."""

    event: Event
    parent: ParentLink | None = None


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """One stored history row, as the store reads it back (`data` and `cause` as decoded
    JSON; `cause` None on a transition's later rows)."""

    seq: int
    type: str
    at: datetime
    step: str | None = None
    phase: str | None = None
    attempt: int | None = None
    pool: str | None = None
    data: Any = None
    cause: Any = None


class Outcome(StrEnum):
    OK = "ok"
    """Replaying the history gives the recorded history and the stored snapshot."""
    MISMATCH = "mismatch"
    """They differ: the first difference is reported."""
    UNVERIFIABLE = "unverifiable"
    """The history cannot be replayed: recorded before causes were kept (or by a newer
    Warren). Not a failure."""


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """What a replay found. On a mismatch, where: the seq of the history row (None for the
    snapshot), the field, and its recorded and replayed values."""

    outcome: Outcome
    message: str
    transitions: int = 0
    """Transitions replayed (up to the difference)."""
    seq: int | None = None
    field: str | None = None
    recorded: Any = None
    replayed: Any = None


_COMPARED = ("type", "step", "phase", "attempt", "pool", "data")


def replay_history(
    definition: Saga, instance_id: UUID, rows: Sequence[Recorded], snapshot: Any
) -> Verdict:
    """Rebuild instance `instance_id` of `definition` from its history `rows` (in seq order)
    and compare with what was recorded, then with the stored `snapshot` (decoded JSON)."""
    transitions = _transitions(rows)
    if isinstance(transitions, Verdict):
        return transitions
    instance: InstanceState | None = None
    for done, (first, recorded) in enumerate(transitions):
        try:
            cause = msgspec.convert(first.cause, Cause)
        except msgspec.ValidationError as exc:
            return Verdict(
                outcome=Outcome.UNVERIFIABLE,
                message=f"the cause recorded at seq {first.seq} is not one this Warren reads "
                f"({exc}): cannot verify",
                transitions=done,
                seq=first.seq,
            )
        now = first.at.astimezone(UTC)
        if instance is None:
            if not isinstance(cause.event, Start):
                return _differs(first.seq, "cause", "start", _tag(cause.event), done)
            instance = new_instance(definition, instance_id, cause.event.input, now, cause.parent)
        transition = decide(definition, instance, cause.event, now)
        difference = _compare_history(recorded, transition.history, done)
        if difference is not None:
            return difference
        # As the shell stores it: the next transition decides from the snapshot read back.
        instance = _stored(transition.instance)
    assert instance is not None
    return _compare_snapshot(instance, snapshot, len(transitions))


def _transitions(rows: Sequence[Recorded]) -> list[tuple[Recorded, list[Recorded]]] | Verdict:
    """The rows grouped by transition: each starts at a row with a cause."""
    if not rows:
        return Verdict(outcome=Outcome.UNVERIFIABLE, message="it has no history: cannot verify")
    groups: list[tuple[Recorded, list[Recorded]]] = []
    for row in rows:
        if row.cause is not None:
            groups.append((row, [row]))
        elif groups:
            groups[-1][1].append(row)
        else:
            return Verdict(
                outcome=Outcome.UNVERIFIABLE,
                message=f"seq {row.seq} was recorded without its cause, by a Warren that did "
                "not keep causes yet: cannot verify",
                seq=row.seq,
            )
    return groups


def _compare_history(
    recorded: list[Recorded], replayed: tuple[HistoryEvent, ...], done: int
) -> Verdict | None:
    for then, now in zip(recorded, replayed, strict=False):
        if then.seq != now.seq:
            return _differs(then.seq, "seq", then.seq, now.seq, done)
        for field in _COMPARED:
            was, is_ = _json(getattr(then, field)), _json(getattr(now, field))
            if was != is_:
                return _differs(then.seq, field, was, is_, done)
        if then.at != now.at:
            return _differs(then.seq, "at", then.at.isoformat(), now.at.isoformat(), done)
    if len(recorded) > len(replayed):
        extra = recorded[len(replayed)]
        return _differs(extra.seq, "type", extra.type, None, done)
    if len(replayed) > len(recorded):
        missing = replayed[len(recorded)]
        return _differs(missing.seq, "type", None, missing.type.value, done)
    return None


def _compare_snapshot(rebuilt: InstanceState, snapshot: Any, done: int) -> Verdict:
    try:
        stored = upgraded(msgspec.convert(snapshot, InstanceState))
    except SnapshotTooNew as exc:
        return Verdict(outcome=Outcome.UNVERIFIABLE, message=f"{exc}: cannot verify")
    except msgspec.ValidationError as exc:
        return _differs(None, "snapshot", f"unreadable: {exc}", "a snapshot", done)
    found = _first_difference(_json(stored), _json(rebuilt), "snapshot")
    if found is not None:
        path, was, is_ = found
        return _differs(None, path, was, is_, done)
    return Verdict(
        outcome=Outcome.OK,
        message=f"replaying {done} transitions ({rebuilt.seq} history events) gives the "
        "recorded history and the stored snapshot",
        transitions=done,
    )


def _first_difference(was: Any, is_: Any, path: str) -> tuple[str, Any, Any] | None:
    """The first place (a dotted path) where two decoded JSON values differ."""
    if isinstance(was, dict) and isinstance(is_, dict):
        for key in sorted(was.keys() | is_.keys()):
            if key not in was or key not in is_:
                return f"{path}.{key}", was.get(key), is_.get(key)
            found = _first_difference(was[key], is_[key], f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(was, list) and isinstance(is_, list) and len(was) == len(is_):
        for index, (a, b) in enumerate(zip(was, is_, strict=True)):
            found = _first_difference(a, b, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    return None if was == is_ else (path, was, is_)


def _differs(seq: int | None, field: str, recorded: Any, replayed: Any, done: int) -> Verdict:
    where = f"seq {seq}" if seq is not None else "the stored snapshot"
    return Verdict(
        outcome=Outcome.MISMATCH,
        message=f"{where}: {field} is {recorded!r} as recorded but {replayed!r} on replay",
        transitions=done,
        seq=seq,
        field=field,
        recorded=recorded,
        replayed=replayed,
    )


def _json(value: Any) -> Any:
    """`value` as JSON reads it back: what the store keeps, compared alike on both sides."""
    return msgspec.json.decode(msgspec.json.encode(value))


def _stored(instance: InstanceState) -> InstanceState:
    return msgspec.json.decode(msgspec.json.encode(instance), type=InstanceState)


def _tag(event: Event) -> Any:
    return _json(event).get("event")
