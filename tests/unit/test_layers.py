"""The layering DESIGN.md asks for, checked on the real import graph."""

from __future__ import annotations

import subprocess
import sys


def _modules_loaded_by(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint('\\n'.join(sys.modules))"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(output.stdout.split())


def test_workers_never_import_the_engine_or_the_orchestrator_service() -> None:
    loaded = _modules_loaded_by("import workers, workers.runtime, examples.orders.workers")

    forbidden = [
        m
        for m in loaded
        if m.startswith(
            ("orchestrator.engine", "orchestrator.service", "orchestrator.api", "litestar")
        )
    ]
    assert forbidden == []


def test_importing_the_dsl_loads_no_server_code() -> None:
    loaded = _modules_loaded_by("import orchestrator")

    assert not [
        m
        for m in loaded
        if m.startswith(("aio_pika", "sqlalchemy", "litestar", "orchestrator.engine"))
    ]
