"""Documentation examples that need a running API run against a real stack."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from orchestrator.config import Settings
from tests.conftest import Stack
from tests.support import services
from tests.support.processes import Proc, Processes, run_warren
from tests.support.waiting import wait_for
from tests.unit.test_docs import ROOT, examples

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


OWN_SAGA = "## Your own saga in five minutes"


def _own_saga_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(OWN_SAGA)
    return text[start : text.index("\n## ", start)]


async def test_the_readme_own_saga_section_runs_as_written(
    processes: Processes, settings: Settings, run_id: str, tmp_path: Path
) -> None:
    """Its files saved in a new folder, its commands run there as written, against a database
    of the test's own (fresh: `warren migrate` creates the tables)."""
    section = _own_saga_section()
    for code in re.findall(r"```python\n(.*?)```", section, re.DOTALL):
        (tmp_path / code.splitlines()[0].removeprefix("# ")).write_text(code)
    commands = [
        line
        for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
        for line in block.splitlines()
        if line.startswith("warren ")
    ]
    database = f"{run_id}_readme_own_saga"
    await services.create_database(database)
    url = services.database_url(database)
    api_url = f"http://{settings.api_host}:{settings.api_port}"
    env = {
        "WARREN_DATABASE_URL": url,
        "WARREN_AMQP_URL": settings.amqp_url,
        "WARREN_NAMESPACE": settings.namespace,
        "WARREN_API_URL": api_url,
    }
    outcomes = []
    printed = ""

    for line in commands:
        args = shlex.split(line, comments=True)[1:]
        if args[0] == "dev":  # runs until stopped: the next commands run beside it
            dev = processes.start("dev", *args, env={"WARREN_DATABASE_URL": url}, cwd=tmp_path)
            await _wait_live(api_url, dev)
            continue
        result = await asyncio.to_thread(run_warren, env, *args, cwd=tmp_path)
        ends = re.search(r"# ends (\w+)", line)
        if ends:
            outcomes.append(ends[1])
            assert f"ended {ends[1]}" in result.stdout, (line, result.stdout, result.stderr)
            printed = result.stdout
        else:
            assert result.returncode == 0, (line, result.stderr)

    assert outcomes == ["completed", "compensated"]
    # the sample output is the last start's, but for its first line (the instance id)
    [sample] = re.findall(r"```text\n(.*?)```", section, re.DOTALL)
    assert printed.splitlines()[1:] == sample.splitlines()[1:], printed


async def _wait_live(api_url: str, dev: Proc) -> None:
    async def live() -> bool:
        assert dev.running, dev.log()
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                return (await client.get(f"{api_url}/health/live")).status_code == 200
        except httpx.TransportError:
            return False

    await wait_for(live, timeout=90, what="warren dev to answer")
