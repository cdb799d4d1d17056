"""Documentation examples that need a running API run against a real stack."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.unit.test_docs import examples

pytestmark = pytest.mark.e2e

LIVE = examples(live=True)


@pytest.mark.parametrize(("where", "code"), LIVE, ids=[where for where, _ in LIVE])
async def test_live_example_runs(stack: Stack, tmp_path: Path, where: str, code: str) -> None:
    await stack.up()
    script = tmp_path / "example.py"
    script.write_text(code)
    settings = stack.probe.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}
    env["WARREN_API_URL"] = f"http://{settings.api_host}:{settings.api_port}"

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )

    assert result.returncode == 0, f"{where}:\n{result.stderr}"
