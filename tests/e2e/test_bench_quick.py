"""`python -m bench --quick` runs end to end and every saga ends as the workload says; so does
a small run of the events workload (started in batches), every event applied and every
emitted event read back.

It checks correctness (the figures are there, 90% completed and 10% compensated), not speed.
"""

from __future__ import annotations

import pytest

from tests.support.bench import run_bench

pytestmark = pytest.mark.e2e


STEP_FIGURES = {"step_to_step", "orchestrator_to_worker", "worker_to_orchestrator", "api_to_worker"}
LATENCY_KEYS = {"count", "p50_ms", "p90_ms", "p99_ms", "max_ms"}
KINDS = {"api", "orchestrator", "worker", "postgres", "rabbitmq"}
SMALL = ["--sagas", "40", "--sequential", "10", "--warmup", "0"]


@pytest.mark.timeout(180)
def test_quick_bench_prints_every_figure_and_every_saga_ends_as_expected() -> None:
    figures, _ = run_bench("bench", "--quick", timeout=170)

    assert {"workload", "machine", "config", "concurrent", "sequential", "peak_rss_mb"} <= set(
        figures
    )
    machine = figures["machine"]
    assert {"nproc", "cpu_model", "postgres", "rabbitmq", "git_commit"} <= set(machine)
    assert machine["postgres_settings"]["fsync"] == "on"
    assert machine["postgres_settings"]["synchronous_commit"] == "on"

    concurrent = figures["concurrent"]
    assert concurrent["sagas"] == 200
    assert concurrent["statuses"] == {"completed": 180, "compensated": 20}
    assert concurrent["unexpected"] == 0
    assert concurrent["sagas_per_second"] > 0
    assert set(concurrent["end_to_end"]) == LATENCY_KEYS
    assert concurrent["end_to_end"]["count"] == 200
    assert set(concurrent["steps"]) == STEP_FIGURES
    assert concurrent["steps"]["step_to_step"]["count"] == 2 * 200
    assert set(concurrent["cpu_ms_per_saga"]) == KINDS
    assert all(value >= 0 for value in concurrent["cpu_ms_per_saga"].values())

    sequential = figures["sequential"]
    assert sequential["sagas"] == 20
    assert sequential["statuses"] == {"completed": 18, "compensated": 2}
    assert sequential["unexpected"] == 0
    assert sequential["end_to_end"]["p50_ms"] > 0
    assert set(sequential["client_end_to_end"]) == LATENCY_KEYS

    rss = figures["peak_rss_mb"]
    assert {"api", "orchestrator-1", "worker-payments-1", "worker-inventory-1"} <= set(rss)
    assert all(value > 0 for value in rss.values())


@pytest.mark.timeout(180)
def test_a_small_events_bench_applies_every_event_and_reads_back_every_emitted_one() -> None:
    # Its starts go in batches (POST /v1/sagas/{name}/batch), each event fed around its own.
    batched = ["--start-batch", "16"]
    figures, _ = run_bench("bench", "--workload", "events", *SMALL, *batched, timeout=170)
    assert figures["workload"] == "events"
    assert figures["config"]["starts_per_request"] == 16

    concurrent = figures["concurrent"]
    assert concurrent["statuses"] == {"completed": 36, "compensated": 4}
    assert concurrent["unexpected"] == 0
    assert concurrent["commands_per_saga"] == 3.2  # order-3's commands; the wait sends none
    assert set(concurrent["steps"]) == STEP_FIGURES
    events = concurrent["events"]
    assert events["published"] == events["applied"] == 40
    # Half are published once their wait has begun: those cannot have come first.
    assert events["arrived_before_wait"] <= 20
    assert events["published_to_applied"]["count"] == 20
    assert events["applied_per_second"] > 0
    assert events["emitted"] == events["emitted_read_back"] == 36  # order.completed

    sequential = figures["sequential"]
    assert sequential["statuses"] == {"completed": 9, "compensated": 1}
    assert sequential["unexpected"] == 0
    assert sequential["end_to_end_event_first"]["count"] == 5
    assert sequential["end_to_end_event_after"]["count"] == 5
    assert sequential["events"]["applied"] == 10
    assert sequential["events"]["emitted_read_back"] == 9
