"""Running a benchmark module as the README says (`python -m bench...`) from a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, *args: str, timeout: float) -> tuple[dict[str, Any], str]:
    """Run `python -m <module> <args>` in the checkout; its figures (the JSON on stdout) and
    its progress (stderr). A failed run fails the test with the end of its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures, done.stderr
