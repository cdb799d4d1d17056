"""The layering docs/architecture.md describes, checked on the real import graph."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_LIBRARIES = (
    "aio_pika",
    "aiormq",
    "asyncpg",
    "litestar",
    "opentelemetry",
    "prometheus_client",
    "sqlalchemy",
)


def _modules_loaded_by(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint('\\n'.join(sys.modules))"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(output.stdout.split())


def _under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


class _Imports(ast.NodeVisitor):
    """Every module a file names in an import (`from a import b` names `a` and `a.b`)."""

    def __init__(self, *, type_only_too: bool) -> None:
        self.type_only_too = type_only_too
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if not self.type_only_too and ast.unparse(node.test) in {
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        }:
            for statement in node.orelse:
                self.visit(statement)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found |= {alias.name for alias in node.names}

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module is not None and node.level == 0:
            self.found.add(node.module)
            self.found |= {f"{node.module}.{alias.name}" for alias in node.names}


def _imports_of(*files: Path, type_only_too: bool = True) -> set[str]:
    visitor = _Imports(type_only_too=type_only_too)
    for file in files:
        visitor.visit(ast.parse(file.read_text(), str(file)))
    return visitor.found


def _imports_by_file(package: str) -> dict[str, set[str]]:
    """Every module each file of `package` imports, type-checking imports included."""
    folder = ROOT / package.replace(".", "/")
    return {path.name: _imports_of(path) for path in sorted(folder.glob("*.py"))}


# Only the vocabulary of the engine: the words the wire format speaks, not its logic.
ENGINE_VOCABULARY = ("orchestrator.engine", "orchestrator.engine.vocabulary")


def test_workers_never_import_the_engine_or_the_orchestrator_service() -> None:
    loaded = _modules_loaded_by("import workers, workers.runtime, examples.orders.workers")

    forbidden = [
        m
        for m in loaded
        if m.startswith(
            ("orchestrator.engine", "orchestrator.service", "orchestrator.api", "litestar")
        )
        and m not in ENGINE_VOCABULARY
    ]
    assert forbidden == []


def test_the_engine_imports_only_the_definitions_the_errors_and_itself() -> None:
    allowed = ("orchestrator.definitions", "orchestrator.errors", "orchestrator.engine")

    imports = _imports_by_file("orchestrator.engine")

    assert "vocabulary.py" in imports
    outside = {
        file: sorted(
            name
            for name in names
            if name.split(".")[0] == "orchestrator"
            and not name.startswith(allowed)
            and name != "orchestrator"
        )
        for file, names in imports.items()
    }
    assert outside == {file: [] for file in imports}


def test_loading_the_whole_engine_loads_no_other_layer() -> None:
    modules = sorted(p.stem for p in (ROOT / "orchestrator/engine").glob("[!_]*.py"))
    statement = "; ".join(f"import orchestrator.engine.{m}" for m in modules)

    loaded = _modules_loaded_by(statement)

    assert not [
        m
        for m in loaded
        if m.startswith(
            (
                "orchestrator.messaging",
                "orchestrator.persistence",
                "orchestrator.storage",
                "orchestrator.service",
                "orchestrator.api",
                "orchestrator.observability",
                "orchestrator.cli",
                "aio_pika",
                "sqlalchemy",
                "litestar",
                "opentelemetry",
                "prometheus_client",
            )
        )
    ]


def test_the_wire_format_takes_only_the_engine_vocabulary() -> None:
    imports = _imports_by_file("orchestrator.messaging")

    from_engine = {
        file: sorted(name for name in names if name.startswith("orchestrator.engine"))
        for file, names in imports.items()
    }
    assert from_engine["envelope.py"]  # it speaks the vocabulary: this test checks something
    assert {
        file: [name for name in names if not name.startswith("orchestrator.engine.vocabulary")]
        for file, names in from_engine.items()
    } == {file: [] for file in imports}


def test_importing_the_dsl_loads_no_server_code() -> None:
    loaded = _modules_loaded_by("import orchestrator")

    assert not [
        m
        for m in loaded
        if m.startswith(("aio_pika", "sqlalchemy", "litestar", "orchestrator.engine"))
    ]


def test_the_client_loads_no_server_code() -> None:
    loaded = _modules_loaded_by("import orchestrator.client")

    assert "orchestrator.client" in loaded
    assert sorted(m for m in loaded if _under(m, *SERVER_LIBRARIES)) == []


def test_the_public_names_load_no_server_code() -> None:
    loaded = _modules_loaded_by(
        "from orchestrator import *\nfrom workers import *\n"
        "from orchestrator import WarrenClient, register"
    )

    assert "orchestrator.client" in loaded
    assert sorted(m for m in loaded if _under(m, *SERVER_LIBRARIES)) == []


def test_the_client_imports_only_the_api_schema_and_the_errors() -> None:
    used = _imports_of(ROOT / "orchestrator" / "client.py", type_only_too=False)

    assert (
        sorted(
            m
            for m in used
            if _under(m, "orchestrator")
            and not _under(m, "orchestrator.api.schema", "orchestrator.errors")
        )
        == []
    )


def test_the_api_reaches_tables_and_the_broker_only_through_their_layers() -> None:
    used = _imports_of(*sorted((ROOT / "orchestrator" / "api").glob("*.py")))

    assert (
        sorted(
            m
            for m in used
            if _under(m, "orchestrator.storage.tables", "aio_pika", "aiormq", "pamqp")
        )
        == []
    )


def test_loading_the_configuration_loads_no_messaging() -> None:
    loaded = _modules_loaded_by("import orchestrator.config")

    assert "orchestrator.config" in loaded
    assert sorted(m for m in loaded if _under(m, "orchestrator.messaging", "aio_pika")) == []


# Where SQL may be written: the repositories, one module per table family, and the database
# plumbing under them. Tests, migrations, the benchmark and the examples (users' own tables)
# are not scanned.
REPOSITORIES = "orchestrator/persistence"
PLUMBING = {
    "orchestrator/storage/database.py",  # engine, transactions, the driver connection, ping
    "orchestrator/storage/tables.py",
    "orchestrator/storage/wakeup.py",  # LISTEN/NOTIFY
}
# What builds a statement: the tables, SQLAlchemy's statement constructors, the driver
# connection (raw SQL goes there).
SQL_BUILDERS = (
    "orchestrator.storage.tables",
    "orchestrator.storage.database.driver",
    "sqlalchemy.text",
    "sqlalchemy.select",
    "sqlalchemy.insert",
    "sqlalchemy.update",
    "sqlalchemy.delete",
    "sqlalchemy.sql",
    "sqlalchemy.dialects.postgresql.insert",
)
RAW_SQL = re.compile(r"^\s*(SELECT|INSERT INTO|UPDATE|DELETE FROM|WITH)\s")

# Each table's family: the one repository module that holds its SQL.
FAMILIES = {
    "instances": "instances",
    "history": "instances",
    "timers": "timers",
    "definitions": "definitions",
    "dead_letters": "dead_letters",
    "pool_breakers": "pool_breakers",
    "outbox": "outbox",
    "inbox": "inbox",
    "step_results": "step_results",
    "events": "events",
    "waits": "events",
    "event_deliveries": "events",
}


def _sql_in(path: Path) -> list[str]:
    """What in `path` builds or writes SQL: the imports of `SQL_BUILDERS`, SQL text."""
    tree = ast.parse(path.read_text(), str(path))
    found = sorted(name for name in _imports_of(path) if _under(name, *SQL_BUILDERS))
    found += [  # `import sqlalchemy`: `sqlalchemy.text(…)` would pass unseen
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name == "sqlalchemy"
    ]
    found += [
        node.value.strip().splitlines()[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and RAW_SQL.match(node.value)
    ]
    return found


def test_sql_is_written_only_in_the_repositories() -> None:
    files = sorted((ROOT / "orchestrator").rglob("*.py")) + sorted((ROOT / "workers").rglob("*.py"))

    outside = {
        relative: found
        for path in files
        if not (relative := path.relative_to(ROOT).as_posix()).startswith(f"{REPOSITORIES}/")
        and relative not in PLUMBING
        and (found := _sql_in(path))
    }

    assert outside == {}
    repositories = [p for p in (ROOT / REPOSITORIES).glob("*.py") if _sql_in(p)]
    assert len(repositories) >= len(set(FAMILIES.values()))  # the check reads something


WRITES = re.compile(r"(?:INSERT INTO|UPDATE|DELETE FROM) warren\.(\w+)")


def _tables_written(path: Path) -> set[str]:
    """The tables `path` writes in SQL text, and those it imports to build statements with."""
    imported = {
        name.rsplit(".", 1)[1]
        for name in _imports_of(path)
        if name.startswith("orchestrator.storage.tables.")
    }
    return set(WRITES.findall(path.read_text())) | imported


def test_every_table_has_its_repository_and_only_it_writes_the_table() -> None:
    from orchestrator.storage.tables import metadata

    tables = {table.name for table in metadata.tables.values()}
    modules = {module: ROOT / REPOSITORIES / f"{module}.py" for module in set(FAMILIES.values())}

    assert set(FAMILIES) == tables
    assert sorted(module for module, path in modules.items() if not path.exists()) == []
    # A statement may read another family's table (the breakers count attempts in the
    # history); it writes only its own, raw or through SQLAlchemy.
    foreign = {
        path.name: sorted(_tables_written(path) - {t for t, f in FAMILIES.items() if f == module})
        for module, path in modules.items()
    }
    assert foreign == {path.name: [] for path in modules.values()}
