"""Running the Alembic migrations from code (`warren migrate`, `warren dev`, tests)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

import migrations
from orchestrator.errors import WarrenError

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationInfo

MIGRATIONS_DIR = Path(migrations.__file__).parent

# SQLSTATE classes of a database that cannot be used as configured: connection exceptions,
# invalid authorization, no such database.
_SETTING_SQLSTATES = ("08", "28", "3D")


class MigrationError(WarrenError):
    """The database could not be brought to the latest schema; the message says why."""


class Applied(msgspec.Struct, frozen=True, kw_only=True):
    """A migration that `upgrade` ran."""

    revision: str
    description: str


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head() -> str:
    """The latest revision."""
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head() or "base"


def upgrade(database_url: str, revision: str = "head") -> list[Applied]:
    """Bring the database to `revision` (blocking: call it off the event loop); return the
    migrations that ran, oldest first. Alembic's log lines stay out of the process's logs."""
    applied: list[Applied] = []

    def record(*, step: MigrationInfo, **_: Any) -> None:
        done = step.up_revision  # a Script: the revision file, with its docstring
        if step.is_upgrade and isinstance(done, Script):
            applied.append(Applied(revision=done.revision, description=done.doc))

    config = alembic_config(database_url)
    config.attributes["on_version_apply"] = record  # migrations/env.py passes it to Alembic
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)  # its INFO lines are for its own CLI, not our logs
    try:
        command.upgrade(config, revision)
    except sa_exc.ArgumentError as exc:
        raise MigrationError(
            f"WARREN_DATABASE_URL is not a database URL ({exc}); "
            "e.g. postgresql://user@host:5432/warren"
        ) from exc
    except (sa_exc.DBAPIError, OSError) as exc:
        raise _translate(exc, database_url) from exc
    finally:
        alembic_log.setLevel(level)
    return applied


def _translate(exc: sa_exc.DBAPIError | OSError, database_url: str) -> MigrationError:
    where = make_url(database_url).render_as_string(hide_password=True)
    if isinstance(exc, OSError):
        return MigrationError(
            f"cannot reach the database at {where} ({exc}); check WARREN_DATABASE_URL"
        )
    reason = str(exc.orig or exc).strip().splitlines()[0]
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    if sqlstate.startswith(_SETTING_SQLSTATES) or exc.connection_invalidated:
        return MigrationError(
            f"cannot use the database at {where}: {reason}; check WARREN_DATABASE_URL"
        )
    return MigrationError(f"migrating the database at {where} failed: {reason}")
