"""`warren check`: which pool runs each command of the sagas, and whether a worker app
handles it. Exit code 6 when a command has no handler in the app (docs/cli.md)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import click

from orchestrator.cli import render
from orchestrator.cli.operate import json_option

if TYPE_CHECKING:
    from workers.check import Report

EXIT_MISSING_HANDLER = 6


@click.command()
@click.option("--app", "app_ref", help="The Worker object to check, as MODULE:ATTR.")
@click.option(
    "--sagas",
    "saga_refs",
    multiple=True,
    help="Saga(s) as MODULE:ATTR (a Saga or a list; repeatable). Default: the latest version "
    "of every saga registered in WARREN_DATABASE_URL.",
)
@json_option
def check(app_ref: str | None, saga_refs: tuple[str, ...], as_json: bool) -> None:
    """List each command of each saga with the pool that must run it; with --app, say which
    have no handler in the app and which of its handlers no saga uses."""
    from orchestrator.cli import _load_worker, _settings, _user_errors
    from orchestrator.service.registry import import_sagas
    from workers.check import check as check_handlers
    from workers.check import missing_message, registered_sagas

    with _user_errors():
        app = _load_worker(app_ref) if app_ref else None
        if saga_refs:
            sagas = [saga for ref in saga_refs for saga in import_sagas(ref)]
        else:
            sagas = asyncio.run(registered_sagas(_settings().database_url))
    report = check_handlers(sagas, app)
    if as_json:
        render.emit_json(report)
    else:
        _show(report, source="given" if saga_refs else "registered")
    if report.missing:
        if not as_json:
            for found in report.missing:
                click.echo(f"missing: {missing_message(found, report.app or '?')}", err=True)
        raise SystemExit(EXIT_MISSING_HANDLER)


def _show(report: Report, *, source: str) -> None:
    if not report.commands:
        click.echo(f"no saga is {source}: nothing to check")
        return

    def handler(handled: bool | None) -> str:
        if handled is None:
            return "-"
        return click.style("yes", fg="green") if handled else click.style("MISSING", fg="red")

    render.table(
        ["SAGA", "STEP", "PHASE", "POOL", "COMMAND", "HANDLER"],
        [
            [f"{c.saga} v{c.version}", c.step, c.phase, c.pool, c.command, handler(c.handled)]
            for c in report.commands
        ],
    )
    if report.app is None:
        return
    if report.unused:
        click.echo(f"\nhandlers of worker app {report.app!r} that no {source} saga uses:")
        render.table(["POOL", "COMMAND"], [[u.pool, u.command] for u in report.unused])
    missing = len(report.missing)
    click.echo(
        f"\nno handler in worker app {report.app!r} for {missing} of {len(report.commands)} "
        "commands"
        if missing
        else f"\nevery command has a handler in worker app {report.app!r}"
    )
