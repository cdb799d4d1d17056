"""What the shell stores of a run, for replay's tests: the history rows, each transition's
cause on its first row (as `persistence.instances.append_many` writes them), and the snapshot,
as Postgres gives them back (decoded JSON)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from orchestrator.engine import Start
from orchestrator.engine.replay import Cause, Recorded

if TYPE_CHECKING:
    from orchestrator.engine import InstanceState, ParentLink
    from tests.support.engine import Run


def as_json(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


def recorded(run: Run, parent: ParentLink | None = None) -> list[Recorded]:
    """The history of `run` with its causes; `parent` the link its start was given."""
    rows: list[Recorded] = []
    for event, transition in run.transitions:
        for index, h in enumerate(transition.history):
            cause = None
            if index == 0:
                link = parent if isinstance(event, Start) else None
                cause = as_json(Cause(event=event, parent=link))
            rows.append(
                Recorded(
                    seq=h.seq,
                    type=h.type.value,
                    at=h.at,
                    step=h.step,
                    phase=h.phase.value if h.phase else None,
                    attempt=h.attempt,
                    pool=h.pool,
                    data=as_json(h.data),
                    cause=cause,
                )
            )
    return rows


def snapshot(instance: InstanceState) -> Any:
    return as_json(instance)
