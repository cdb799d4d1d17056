"""The travel example on the real servers (issue 13's proof): a parallel, a choice, a child
saga and a map, with a failure injected at each of them and none.

One stack serves the whole module: every case's trip starts at once, each test then checks
one trip. The proof is the example's ledger (examples/travel/workers.py, no unique
constraint): each effect and each compensation once, every effect of a compensated trip
undone and nothing else, newest first along every path through the flow, each undo naming
what its step made.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import text

from examples.travel.saga import sagas
from orchestrator.config import Settings
from orchestrator.service.registry import register_saga
from orchestrator.storage.database import create_engine
from tests.conftest import Stack
from tests.support import services
from tests.support.probes import Probe
from tests.support.processes import Processes, free_port, run_warren
from tests.support.travel import Row, Trip, child_of, ledger_problems, trip_rows

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

pytestmark = pytest.mark.e2e

POOLS = ("bookings", "billing", "seating")

CASES = {
    "completes-by-card": Trip("card", transient={"book_car": 1, "capture": 1, "assign_seat": 1}),
    "completes-by-invoice": Trip("invoice", transient={"send_invoice": 2}),
    "parallel-branch-fails": Trip("card", fail_at="book_hotel"),
    "invoice-fails": Trip("invoice", fail_at="send_invoice"),
    "child-authorize-fails": Trip("card", fail_at="authorize"),
    "child-capture-fails": Trip("card", fail_at="capture"),
    "map-item-fails": Trip("card", fail_at="seats[1]/assign_seat"),
}


@dataclass
class Trips:
    stack: Stack
    ids: dict[str, str]


@pytest.fixture(scope="module")
async def trips(
    run_id: str,
    template_db: str,
    amqp_url: str,
    janitor: services.QueueJanitor,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Trips]:
    """One stack for the module (api, orchestrator, the travel workers), every trip started."""
    name = f"{run_id}_travel"
    await services.create_database(name, template=template_db)
    settings = Settings(
        database_url=services.database_url(name),
        amqp_url=amqp_url,
        namespace="travel",
        api_port=free_port(),
        outbox_grace_seconds=0.5,
        sweep_interval_seconds=0.2,
        shutdown_grace_seconds=10.0,
    )
    engine = create_engine(settings.database_url, pool_size=2)
    probe = Probe(settings, engine)
    processes = Processes(settings, tmp_path_factory.mktemp("travel"))
    try:
        async with httpx.AsyncClient(
            base_url=f"http://{settings.api_host}:{settings.api_port}", timeout=10.0
        ) as http:
            stack = Stack(processes, probe, http)
            for saga in sagas:
                await register_saga(engine, saga)
            await stack.api()
            await stack.orchestrators()
            worker = processes.worker("examples.travel.workers:worker")
            for pool in POOLS:
                await probe.wait_consumers(settings.topology.pool_queue(pool), alive=worker.alive)
            ids = {
                case: await stack.start(trip.input(), saga="travel") for case, trip in CASES.items()
            }
            yield Trips(stack, ids)
    finally:
        processes.stop_all()
        await probe.close()
        await engine.dispose()
        janitor.ended(settings.topology)
        await services.drop_database(name)


@pytest.fixture
def logs_on_failure(request: pytest.FixtureRequest, trips: Trips) -> Iterator[None]:
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(trips.stack.processes.logs())


async def ledger(probe: Probe, trip_id: str) -> list[Row]:
    async with probe.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, instance_id::text, step, action, ref FROM travel_example.ledger "
                "WHERE instance_id IN (:trip, :child)"
            ),
            {"trip": trip_id, "child": child_of(trip_id)},
        )
        return trip_rows(trip_id, [tuple(row) for row in rows])


@pytest.mark.usefixtures("logs_on_failure")
@pytest.mark.parametrize("case", list(CASES))
async def test_a_trip_ends_as_its_input_asks_with_each_effect_and_undo_once(
    trips: Trips, case: str
) -> None:
    trip, trip_id = CASES[case], trips.ids[case]
    probe = trips.stack.probe

    status = await probe.wait_terminal(trip_id, timeout=90)

    rows = await ledger(probe, trip_id)
    assert status == trip.status
    assert {row.step for row in rows if not row.undoes} == trip.effects(), rows
    assert ledger_problems(status, rows, trip.paths()) == [], rows
    if trip.fail_at is not None:  # the step that failed was not undone (it did nothing)
        history = await probe.history(trip_id)
        failed = {h["step"] for h in history if h["type"] == "step_failed"}
        undone = {h["step"] for h in history if h["type"] == "compensation_dispatched"}
        assert failed, history
        assert failed & undone == set(), history


# ---- the history is the record: every trip, and every child, replays to its snapshot -------


async def test_every_instance_replays_to_its_snapshot_and_a_corrupt_one_is_reported(
    trips: Trips,
) -> None:
    stack, probe = trips.stack, trips.stack.probe
    for trip_id in trips.ids.values():
        await probe.wait_terminal(trip_id, timeout=90)
    api_url = str(stack.http.base_url).rstrip("/")

    every = await _all_verifications(stack.http)
    assert len(every) > len(trips.ids)  # the trips and the children they started
    assert {v["outcome"] for v in every} == {"ok"}, [v for v in every if v["outcome"] != "ok"]

    victim = trips.ids["completes-by-card"]
    async with probe.engine.begin() as conn:
        original = await conn.scalar(
            text("SELECT state::text FROM warren.instances WHERE id = :id"), {"id": victim}
        )
        await conn.execute(
            text(
                "UPDATE warren.instances "
                "SET state = jsonb_set(state, '{steps,book_flight,attempt}', '7') WHERE id = :id"
            ),
            {"id": victim},
        )
    try:
        one = (await stack.http.get(f"/v1/instances/{victim}/verification")).json()
        by_cli = await asyncio.to_thread(
            run_warren, {"WARREN_API_URL": api_url}, "instances", "verify", victim
        )
        all_by_cli = await asyncio.to_thread(
            run_warren, {"WARREN_API_URL": api_url}, "instances", "verify", "--all", "--page", "3"
        )
    finally:
        async with probe.engine.begin() as conn:
            await conn.execute(
                text("UPDATE warren.instances SET state = CAST(:s AS jsonb) WHERE id = :id"),
                {"s": original, "id": victim},
            )

    assert one["outcome"] == "mismatch"
    assert (one["seq"], one["field"]) == (None, "snapshot.steps.book_flight.attempt")
    assert (one["recorded"], one["replayed"]) == (7, 1)
    assert "do not operate" in one["message"]  # and what to do
    assert by_cli.returncode == 7, by_cli.stderr
    assert "mismatch" in by_cli.stdout
    assert "snapshot.steps.book_flight.attempt" in by_cli.stdout
    assert all_by_cli.returncode == 7, all_by_cli.stderr
    assert f"verified {len(every)} instances: {len(every) - 1} ok," in all_by_cli.stdout
    assert "1 mismatched" in all_by_cli.stdout
    assert victim in all_by_cli.stdout
    restored = await asyncio.to_thread(
        run_warren, {"WARREN_API_URL": api_url}, "instances", "verify", victim, "--json"
    )
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["outcome"] == "ok"
    missing = (await stack.http.get(f"/v1/instances/{uuid4()}/verification")).json()
    assert missing["status"] == 404


async def _all_verifications(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every instance's verification, through the paging route (2 a page: several pages)."""
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params = {"limit": "2"} | ({"after": after} if after else {})
        page = (await http.get("/v1/verifications", params=params)).json()
        found += page["items"]
        after = page["next_after"]
        if after is None:
            return found
