"""The layering DESIGN.md asks for, checked on the real import graph."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_loaded_by(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint('\\n'.join(sys.modules))"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(output.stdout.split())


def _imports_of(package: str) -> dict[str, set[str]]:
    """Every module each file of `package` imports, type-checking imports included."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package.replace(".", "/")).glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from package import module` imports the module: count both
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[path.name] = names
    return found


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

    imports = _imports_of("orchestrator.engine")

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
    imports = _imports_of("orchestrator.messaging")

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
