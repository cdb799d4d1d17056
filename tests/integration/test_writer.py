"""One writer for every change to an instance (persistence.instances.save_many): a start is
its first transition (inserted), any later one is an update of the snapshot it was decided
from, and a transition decided from a snapshot that moved on is refused, writing nothing."""

from __future__ import annotations

from uuid import UUID

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.orders.saga import order_saga
from orchestrator.engine import Cancel, Phase, StepReply, Transition, decide
from orchestrator.errors import Conflict
from orchestrator.messaging.envelope import new_message_id, utcnow
from orchestrator.messaging.topology import Topology
from orchestrator.persistence import instances
from orchestrator.persistence.definitions import DefinitionCache
from orchestrator.persistence.outbox import PendingRow
from orchestrator.service import transitions
from orchestrator.storage.database import transaction
from tests.support.probes import Probe

pytestmark = pytest.mark.integration

TOPOLOGY = Topology(namespace="writer")
INPUT = {"order_id": "W-1", "amount": 5}


async def _start(engine: AsyncEngine, instance_id: UUID) -> tuple[Transition, list[PendingRow]]:
    """An order's start, in a transaction of its own."""
    async with transaction(engine) as conn:
        return await transitions.start(
            conn, TOPOLOGY, order_saga, instance_id, INPUT, instances.NewInstance()
        )


async def test_a_start_is_the_first_transition_and_a_taken_id_writes_nothing(
    engine: AsyncEngine, probe: Probe
) -> None:
    instance_id = new_message_id()
    transition, pending = await _start(engine, instance_id)
    assert [m.message.routing_key for m in pending] == [transition.dispatches[0].pool]
    assert [h["type"] for h in await probe.history(instance_id)] == [
        "saga_started",
        "step_dispatched",
    ]

    with pytest.raises(instances.AlreadyStarted):
        await _start(engine, instance_id)

    assert await probe.count("warren.history") == 2
    assert await probe.count("warren.outbox") == 1


async def test_a_transition_decided_from_a_stale_snapshot_is_refused(
    engine: AsyncEngine, probe: Probe
) -> None:
    instance_id = new_message_id()
    start, _ = await _start(engine, instance_id)
    first = start.dispatches[0]
    succeeded = StepReply(step=first.step, phase=Phase.FORWARD, attempt=1, ok=True)
    async with transaction(engine) as conn:
        await transitions.apply_event(conn, DefinitionCache(), TOPOLOGY, instance_id, succeeded)
    history = await probe.count("warren.history")

    # Decided from the start's snapshot, which a reply has since moved on from.
    stale = decide(order_saga, start.instance, Cancel(), utcnow())
    with pytest.raises(Conflict) as refused:
        async with transaction(engine) as conn:
            await instances.save_many(conn, [instances.Written(stale)], TOPOLOGY)

    assert refused.value.retryable
    assert await probe.count("warren.history") == history
    assert await probe.status(instance_id) == "running"


async def test_a_group_of_starts_leaves_out_only_the_one_whose_key_is_taken(
    engine: AsyncEngine, probe: Probe
) -> None:
    async with transaction(engine) as conn:
        await transitions.start(
            conn,
            TOPOLOGY,
            order_saga,
            new_message_id(),
            INPUT,
            instances.NewInstance(idempotency_key="taken"),
        )
    starts = [
        transitions.NewStart(order_saga, new_message_id(), INPUT, instances.NewInstance()),
        transitions.NewStart(
            order_saga, new_message_id(), INPUT, instances.NewInstance(idempotency_key="taken")
        ),
        transitions.NewStart(
            order_saga, new_message_id(), INPUT, instances.NewInstance(idempotency_key="free")
        ),
    ]
    async with transaction(engine) as conn:
        made, pending = await transitions.start_many(conn, TOPOLOGY, starts)

    assert [transition is not None for transition in made] == [True, False, True]
    assert len(pending) == 2  # the first command of each start written
    assert await probe.status(starts[1].instance_id) is None  # nothing of it written
    assert not await probe.history(starts[1].instance_id)
    for written in (starts[0], starts[2]):
        assert await probe.status(written.instance_id) == "running"
    assert await probe.count("warren.outbox") == 3


async def test_the_next_write_deletes_the_rows_its_process_published(
    engine: AsyncEngine, probe: Probe
) -> None:
    _, published = await _start(engine, new_message_id())
    assert await probe.count("warren.outbox") == 1
    async with transaction(engine) as conn:
        _, pending = await transitions.start_many(
            conn,
            TOPOLOGY,
            [transitions.NewStart(order_saga, new_message_id(), INPUT, instances.NewInstance())],
            forget=[row.id for row in published],
        )
    # The earlier row went in the statement that wrote the new one.
    assert await probe.count("warren.outbox") == 1
    assert [row.id for row in pending] != [row.id for row in published]
