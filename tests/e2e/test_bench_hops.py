"""`python -m bench.hops` times each part of a hop on a scratch database and vhost, prints every
part, and removes both on the way out."""

from __future__ import annotations

import pytest

from tests.support.bench import run_bench

pytestmark = pytest.mark.e2e

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
    figures, progress = run_bench("bench.hops", "--rounds", "20", timeout=110)
    assert figures["rounds"] == 20
    assert figures["machine"]["postgres_settings"] == {"fsync": "on", "synchronous_commit": "on"}
    assert set(figures["parts"]) == PARTS
    for part in figures["parts"].values():
        assert 0 < part["p50_ms"] <= part["p90_ms"]
    created = [line for line in progress.splitlines() if "creating database and vhost" in line]
    dropped = [line for line in progress.splitlines() if "dropped database and vhost" in line]
    assert len(created) == len(dropped) == 1
