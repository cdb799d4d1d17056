"""docker-compose.yml is right by construction: validated without an engine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed"
)
def test_compose_file_is_valid() -> None:
    result = subprocess.run(
        ["docker-compose", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_runs_every_process_kind_and_the_example_pools() -> None:
    text = (ROOT / "docker-compose.yml").read_text()

    for command in ('"migrate"', '"api"', '"orchestrator"', '"register"'):
        assert command in text
    for pool in ("payments", "inventory", "shipping"):
        assert f"--pool, {pool}" in text or f'"--pool", "{pool}"' in text
