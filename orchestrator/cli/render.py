"""Output for people (aligned tables, colour on a terminal) and for scripts (--json)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
import msgspec

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from orchestrator.api.views import InstanceView
    from orchestrator.messaging.failure import Failure
    from orchestrator.persistence.queries import HistoryRow

STATUS_COLOURS = {
    "completed": "green",
    "succeeded": "green",
    "compensated": "yellow",
    "compensating": "yellow",
    "retry_wait": "yellow",
    "compensation_retry_wait": "yellow",
    "running": "cyan",
    "failed": "red",
    "compensation_failed": "red",
    "pending": "bright_black",
}


def emit_json(value: Any) -> None:
    click.echo(msgspec.json.encode(value).decode())


def status(text: str) -> str:
    return click.style(text, fg=STATUS_COLOURS.get(text))


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if value else "-"


def failure(value: Failure) -> str:
    return f"{value.type}: {value.message}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns aligned on the visible text (colour codes do not count)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(click.unstyle(cell)))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c + " " * (w - len(click.unstyle(c))) for c, w in zip(cells, widths, strict=True)
        )

    click.echo(click.style(line(headers), bold=True).rstrip())
    for row in rows:
        click.echo(line(row).rstrip())


def instance(view: InstanceView) -> None:
    title = click.style(str(view.id), bold=True)
    click.echo(f"{title}  {view.saga} v{view.version}  {status(view.status)}")
    click.echo(f"created {when(view.created_at)}   updated {when(view.updated_at)}")
    if view.failure is not None:
        click.echo(f"failure: {failure(view.failure)}")
    rows = []
    for step in view.steps:
        comp = step.compensation
        undo = ""
        if comp is not None:
            undo = f"{comp.command} x{comp.attempts}" if comp.attempts else comp.command
        error = failure(step.error) if step.error else ""
        if comp is not None and comp.error is not None:  # the latest trouble of the step
            error = f"compensation {failure(comp.error)}"
        rows.append(
            [
                step.name,
                step.pool,
                status(step.status),
                str(step.attempts),
                when(step.finished_at),
                undo,
                error,
            ]
        )
    click.echo()
    table(["STEP", "POOL", "STATUS", "ATTEMPTS", "FINISHED", "COMPENSATION", "ERROR"], rows)


def history(rows: Sequence[HistoryRow]) -> None:
    table(
        ["SEQ", "TIME", "EVENT", "STEP", "PHASE", "ATTEMPT", "POOL"],
        [
            [
                str(r.seq),
                when(r.recorded_at),
                status(r.type.removeprefix("saga_")) if r.type.startswith("saga_") else r.type,
                r.step or "",
                r.phase or "",
                str(r.attempt or ""),
                r.pool or "",
            ]
            for r in rows
        ],
    )
