"""`python -m bench.publish` publishes batches through Warren's broker on a scratch vhost,
prints the CPU per message of the publisher and of RabbitMQ, and removes the vhost."""

from __future__ import annotations

import pytest

from tests.support.bench import run_bench

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(120)
def test_publish_bench_prints_its_figures_and_drops_its_scratch_servers() -> None:
    figures, progress = run_bench("bench.publish", "--batches", "4", "--size", "16", timeout=110)
    assert (figures["batches"], figures["size"], figures["messages"]) == (4, 16, 64)
    assert figures["publisher_cpu_us_per_message"] > 0
    assert figures["rabbitmq_cpu_us_per_message"] >= 0
    assert figures["wall_us_per_message"] > 0
    created = [line for line in progress.splitlines() if "creating database and vhost" in line]
    dropped = [line for line in progress.splitlines() if "dropped database and vhost" in line]
    assert len(created) == len(dropped) == 1
