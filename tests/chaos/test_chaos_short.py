"""The short chaos run of CI: a few hundred sagas (one in four a travel saga, with its child
payment saga), every fault kind at least once, seeded; alongside one start in five, an order
placed and paid by events, some sent twice or three times, through the broker and the API.

It runs `python -m tests.chaos` as a subprocess on private Postgres and RabbitMQ servers (the
shared ones are never restarted). The subprocess tears its servers down on exit, on errors and on
SIGTERM; if this test times out, it is sent SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.schedule import ALL_KINDS

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("WARREN_CHAOS_SEED", "7"))
ARGS = [
    "--sagas", "240",
    "--duration", "75",
    "--faults", str(len(ALL_KINDS) + 3),
    "--pause", "5,12",
    "--drain-timeout", "90",
    "--seed", str(SEED),
]  # fmt: skip


@pytest.mark.timeout(300)
def test_short_chaos_run_keeps_every_invariant(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    log_dir = tmp_path / "chaos"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.chaos", *ARGS, "--log-dir", str(log_dir)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=280)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # its teardown stops the private servers
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(output)  # shown by pytest when the test fails
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary.get("harness_error") is None, summary
    failed = {name: check for name, check in summary["invariants"].items() if not check["ok"]}
    assert not failed, json.dumps(failed, indent=2)
    assert summary["effects_double_applied"] == 0
    assert summary["sagas_lost"] == 0
    assert summary["sagas_started"] == 240
    assert summary["trips_started"] == 60  # every 4th: the travel saga is checked too
    # Every 3rd block of 8 starts, its 6 orders in one batch request: the batch path too.
    assert summary["orders_started_in_batches"] == 60
    events = summary["events"]
    assert events["orders_placed"] == events["completed"] == 48  # every 5th: events checked
    assert set(events["payment_sent"]) == {"first", "soon", "later"}, events
    assert set(summary["faults_by_kind"]) == {kind.value for kind in ALL_KINDS}, summary
    assert proc.returncode == 0
