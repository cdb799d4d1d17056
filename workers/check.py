"""Does a worker app handle every command its sagas send? A command with no handler is a
deployment error that otherwise shows only when an instance reaches it.

`check(sagas, app)` lists each command of each saga (its steps' and its compensations') with
the pool that must run it, whether the app has a handler for it there, and which of the app's
handlers no saga uses. `warren check`, `warren register --app`, `warren dev` and a starting
worker (for the pools it serves) use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from sqlalchemy import exc as sa_exc

from orchestrator.definitions import Step
from orchestrator.errors import StorageError
from orchestrator.persistence.definitions import load_latest
from orchestrator.storage.database import create_engine, translate_errors

if TYPE_CHECKING:
    import logging
    from collections.abc import Collection, Iterable

    from orchestrator.definitions import Saga
    from workers.app import Worker


class CommandCheck(msgspec.Struct, frozen=True, kw_only=True):
    """One command a saga sends, and who handles it."""

    saga: str
    version: int
    step: str
    phase: str
    """``forward`` (the step's command) or ``compensate`` (its compensation's)."""
    pool: str
    """The pool whose workers must run it."""
    command: str
    handled: bool | None
    """Whether the app has a handler for it on that pool; null when no app was checked."""
    handled_on: list[str] = msgspec.field(default_factory=list)
    """Other pools where the app does handle this command (a pool name typo, say)."""

    def describe(self) -> str:
        what = "step" if self.phase == "forward" else "compensation of step"
        return (
            f"saga {self.saga} v{self.version}: command {self.command!r} ({what} "
            f"{self.step!r}) on pool {self.pool!r}"
        )


class UnusedHandler(msgspec.Struct, frozen=True, kw_only=True):
    pool: str
    command: str


class Report(msgspec.Struct, frozen=True, kw_only=True):
    app: str | None
    """The worker app's name; null when only the sagas were listed."""
    commands: list[CommandCheck]
    unused: list[UnusedHandler]
    """The app's handlers that none of the sagas sends a command to."""

    @property
    def missing(self) -> list[CommandCheck]:
        return [c for c in self.commands if c.handled is False]


def check(
    sagas: Iterable[Saga], app: Worker | None, *, pools: Collection[str] | None = None
) -> Report:
    """Each command of `sagas` against `app`'s handlers; only those on `pools` when given."""
    commands: list[CommandCheck] = []
    used: set[tuple[str, str]] = set()
    for saga in sagas:
        # A child saga's orders go to the orchestrators, not to a worker app: not checked.
        for step in (task for task in saga.tasks if isinstance(task, Step)):
            sends = [("forward", step.pool, step.command_name)]
            if step.compensation is not None:
                sends.append(("compensate", step.compensation_pool, step.compensation.command))
            for phase, pool, command in sends:
                if pools is not None and pool not in pools:
                    continue
                used.add((pool, command))
                handled = None if app is None else app.lookup(pool, command) is not None
                elsewhere = [] if app is None or handled else _pools_handling(app, command)
                commands.append(
                    CommandCheck(
                        saga=saga.name,
                        version=saga.version,
                        step=step.name,
                        phase=phase,
                        pool=pool,
                        command=command,
                        handled=handled,
                        handled_on=elsewhere,
                    )
                )
    unused = [
        UnusedHandler(pool=spec.pool, command=spec.command)
        for spec in (app.handlers if app is not None else [])
        if (spec.pool, spec.command) not in used and (pools is None or spec.pool in pools)
    ]
    return Report(app=app.name if app else None, commands=commands, unused=unused)


def _pools_handling(app: Worker, command: str) -> list[str]:
    return [spec.pool for spec in app.handlers if spec.command == command]


def missing_message(found: CommandCheck, app: str) -> str:
    """What is wrong and what to do, in one line."""
    hint = (
        f" (it has one on pool(s) {', '.join(found.handled_on)}: is the pool name right?)"
        if found.handled_on
        else ""
    )
    return (
        f"{found.describe()} has no handler in worker app {app!r}{hint}: add "
        f"@worker.handler({found.command!r}, pool={found.pool!r}), or the step fails when an "
        "instance reaches it"
    )


def log_report(report: Report, log: logging.Logger) -> None:
    """Missing handlers as warnings; unused ones as information (a saga registered later may
    use them)."""
    app = report.app or "?"
    for found in report.missing:
        log.warning("%s", missing_message(found, app))
    for spare in report.unused:
        log.info(
            "handler %r on pool %r of worker app %r is used by no registered saga",
            spare.command,
            spare.pool,
            app,
        )


async def registered_sagas(database_url: str) -> list[Saga]:
    """The latest version of every saga registered in Warren's database."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with translate_errors(), engine.connect() as conn:
            return await load_latest(conn)
    except StorageError as exc:
        raise StorageError(
            f"cannot read the registered saga definitions ({exc.message}); check "
            "WARREN_DATABASE_URL"
        ) from exc
    except sa_exc.DBAPIError as exc:  # no warren.definitions table, no permission…
        raise StorageError(
            f"cannot read the registered saga definitions ({exc.orig}); is WARREN_DATABASE_URL "
            "Warren's database, migrated with `warren migrate`?"
        ) from exc
    finally:
        await engine.dispose()
