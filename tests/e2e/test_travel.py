"""The travel example on the real servers (issue 13's proof): a parallel, a choice, a child
saga and a map, with a failure injected at each of them and none.

One stack serves the whole module: every case's trip starts at once, each test then checks
one trip. The proof is the example's ledger (examples/travel/workers.py, no unique
constraint): each effect and each compensation once, every effect of a compensated trip
undone and nothing else, newest first along every path through the flow, each undo naming
what its step made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

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
from tests.support.processes import Processes, free_port
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
