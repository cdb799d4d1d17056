"""`warren simulate`: the path a saga definition would take, from the engine alone.

No servers, no workers: the test harness (`workers.testing`) runs the definition with every
step succeeding with an empty result, except the --fail-at step, which fails for good. In a
flow, --fail-at takes what a harness script takes: a step's name (inside a map: in every item)
or one map item's step key (``seats[1]/assign_seat``); the path shows which case each choice
took, inline, and each map item's steps by key. A `ChildSaga` node runs the saga it names
when --saga gives it (repeatable: each saga a child node may start); its path is shown under
the parent's; a child saga not given fails its node, as an unregistered one would.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import click

from orchestrator.cli import render
from orchestrator.cli.operate import _read_input, json_option

if TYPE_CHECKING:
    from orchestrator.definitions import Saga
    from workers.testing import SagaResult


@click.command()
@click.argument("saga_ref", metavar="SAGA_REF")
@click.option(
    "--fail-at",
    "fail_at",
    metavar="STEP",
    help="Fail this step for good: a step's name (in every map item) or a key (seats[1]/assign).",
)
@click.option(
    "--input", "input_", default="{}", show_default=True, help="JSON input, or @file.json."
)
@click.option(
    "--saga",
    "child_refs",
    metavar="MODULE:ATTR",
    multiple=True,
    help="A saga (or list) the ChildSaga nodes may start; repeatable.",
)
@json_option
def simulate(
    saga_ref: str, fail_at: str | None, input_: str, child_refs: tuple[str, ...], as_json: bool
) -> None:
    """Print the path the saga SAGA_REF (MODULE:ATTR) would take: its steps, its compensations
    and its history, with every step succeeding unless --fail-at names it; its child sagas'
    paths too, for those --saga gives."""
    from orchestrator.cli import _user_errors
    from orchestrator.service.registry import import_sagas
    from workers.testing import FailForGood, HarnessError, SagaHarness
    from workers.testing._run import step_names, tasks_for

    payload = _read_input(input_)
    with _user_errors():
        saga = _one(saga_ref, import_sagas(saga_ref))
        children = [child for ref in child_refs for child in import_sagas(ref)]
    if fail_at is not None:
        try:
            tasks_for(saga, fail_at, children)
        except HarnessError:
            known = ", ".join(step_names(saga, children))
            raise click.BadParameter(
                f"saga {saga.name!r} has no step {fail_at!r} (its steps: {known})",
                param_hint="--fail-at",
            ) from None
    script = (
        [FailForGood(step=fail_at, type="SimulatedFailure", message=f"--fail-at {fail_at}")]
        if fail_at is not None
        else []
    )
    with _user_errors():
        harness = SagaHarness(saga, sagas=children)
        result = asyncio.run(harness.run(input=payload, script=script))
    if as_json:
        render.emit_json(_as_json(result))
        return
    _show(saga, result)


def _as_json(result: SagaResult) -> dict[str, Any]:
    """The run as --json prints it; each child saga's the same way, by node key."""
    return {
        "saga": result.instance.saga,
        "version": result.instance.version,
        "status": result.status,
        "path": result.path,
        "cases": result.cases,
        "compensated": result.compensated,
        "failure": result.failure,
        "history": result.events,
        "children": {key: _as_json(child) for key, child in result.children.items()},
    }


def _one(reference: str, sagas: list[Saga]) -> Saga:
    from orchestrator.service.registry import ImportTargetError

    if len(sagas) != 1:
        listed = ", ".join(saga.name for saga in sagas)
        raise ImportTargetError(
            f"{reference} names {len(sagas)} sagas ({listed}); simulate takes one: name a "
            "single Saga"
        )
    return sagas[0]


def _path(result: SagaResult) -> list[str]:
    """The steps in the order they started, each choice's case where it was taken
    (``[payment: card]``) and each map's item count where it found them (``[seats: 3 items]``)."""
    shown: list[str] = []
    started: set[str] = set()
    for event in result.events:
        if event.step is None:
            continue
        if event.type == "case_chosen":
            shown.append(f"[{event.step}: {event.data['case']}]")
        elif event.type == "items_found":
            count = event.data["items"]
            shown.append(f"[{event.step}: {count} item{'' if count == 1 else 's'}]")
        elif event.type == "step_dispatched" and event.step not in started:
            started.add(event.step)
            shown.append(event.step)
    return shown


def _show_children(result: SagaResult, indent: str = "") -> None:
    """Each child saga's end, path and compensations, under its node, nested as it ran."""
    for key, child in result.children.items():
        saga = f"{child.instance.saga} v{child.instance.version}"
        click.echo(f"{indent}child {key}: {saga}  {render.status(child.status)}")
        click.echo(f"{indent}  path: {' → '.join(_path(child)) or '-'}")
        click.echo(f"{indent}  compensated: {' → '.join(child.compensated) or '-'}")
        _show_children(child, indent + "  ")


def _show(saga: Saga, result: SagaResult) -> None:
    from orchestrator.api.schema import HistoryRow

    click.echo(f"{saga.name} v{saga.version}  {render.status(result.status)}")
    if result.failure is not None:
        click.echo(f"failure: {render.failure(result.failure)}")
    click.echo(f"path: {' → '.join(_path(result)) or '-'}")
    for event in result.events:
        if event.type == "case_chosen":
            click.echo(f"case: {event.step} → {event.data['case']} ({event.data['reason']})")
    click.echo(f"compensated: {' → '.join(result.compensated) or '-'}")
    _show_children(result)
    click.echo()
    render.history(
        [
            HistoryRow(
                seq=event.seq,
                type=event.type,
                step=event.step,
                phase=event.phase.value if event.phase is not None else None,
                attempt=event.attempt,
                pool=event.pool,
                recorded_at=event.at,
                data=event.data,
            )
            for event in result.events
        ]
    )
