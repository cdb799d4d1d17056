"""`python -m bench.hops` times each part of a hop on a scratch database and vhost, prints every
part, and removes both on the way out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PARTS = {
    "pg_round_trip",
    "pg_commit",
    "pg_commit_batch",
    "amqp_round_trip",
    "amqp_publish_deliver",
    "amqp_publish_confirm",
}


@pytest.mark.timeout(120)
def test_hops_prints_every_part_and_drops_its_scratch_servers() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.hops", "--rounds", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    figures = json.loads(done.stdout)
    assert figures["rounds"] == 20
    assert figures["machine"]["postgres_settings"] == {"fsync": "on", "synchronous_commit": "on"}
    assert set(figures["parts"]) == PARTS
    for part in figures["parts"].values():
        assert 0 < part["p50_ms"] <= part["p90_ms"]
    created = [line for line in done.stderr.splitlines() if "creating database and vhost" in line]
    dropped = [line for line in done.stderr.splitlines() if "dropped database and vhost" in line]
    assert len(created) == len(dropped) == 1
