"""The worker's bookkeeping of a batch on the real database (`persistence.step_results`): one
statement claims the commands and their step phases, one settles them with the replies."""

from __future__ import annotations

import asyncio
from uuid import UUID

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.messaging.envelope import new_message_id
from orchestrator.persistence import step_results
from orchestrator.persistence.outbox import OutboxMessage
from orchestrator.storage.database import transaction
from tests.support.probes import Probe

pytestmark = pytest.mark.integration

CONSUMER = "pool:test"


def _reply() -> OutboxMessage:
    return OutboxMessage(
        message_id=new_message_id(), exchange="x", routing_key="replies", body=b"{}"
    )


async def _settled(engine: AsyncEngine, commands: dict[UUID, str], result: object) -> None:
    """A batch whose every handler succeeded with `result`."""
    async with transaction(engine) as conn:
        effects = await step_results.claim(conn, CONSUMER, commands)
        effects.results.update({key: result for key in effects.claimed})
        await step_results.settle(conn, CONSUMER, effects, [_reply()])


async def test_a_batch_claims_new_commands_and_replays_the_effects_applied_before(
    engine: AsyncEngine, probe: Probe
) -> None:
    first, again, new = new_message_id(), new_message_id(), new_message_id()
    await _settled(engine, {first: "i:a:forward"}, {"charged": 5})

    async with transaction(engine) as conn:
        # A copy of `first`, a later attempt of its step phase, and a new command.
        effects = await step_results.claim(
            conn, CONSUMER, {first: "i:a:forward", again: "i:a:forward-retry", new: "i:b:forward"}
        )
    assert effects.fresh == {again, new}
    assert effects.claimed == {"i:a:forward-retry", "i:b:forward"}

    async with transaction(engine) as conn:
        effects = await step_results.claim(conn, CONSUMER, {new_message_id(): "i:a:forward"})
    assert effects.claimed == set()
    assert effects.stored == {"i:a:forward": {"charged": 5}}


async def test_a_failed_handler_gives_its_step_phase_back(
    engine: AsyncEngine, probe: Probe
) -> None:
    async with transaction(engine) as conn:
        effects = await step_results.claim(conn, CONSUMER, {new_message_id(): "i:c:forward"})
        effects.released.append("i:c:forward")
        pending = await step_results.settle(conn, CONSUMER, effects, [_reply()])
    assert len(pending) == 1
    assert await probe.count("warren.step_results") == 0

    async with transaction(engine) as conn:  # a later attempt runs the handler again
        effects = await step_results.claim(conn, CONSUMER, {new_message_id(): "i:c:forward"})
    assert effects.claimed == {"i:c:forward"}


async def test_a_concurrent_attempt_waits_and_replays_what_the_first_committed(
    engine: AsyncEngine,
) -> None:
    key = "i:d:forward"
    claimed_first = asyncio.Event()
    finish_first = asyncio.Event()

    async def first() -> None:
        async with transaction(engine) as conn:
            effects = await step_results.claim(conn, CONSUMER, {new_message_id(): key})
            assert effects.claimed == {key}
            claimed_first.set()
            await finish_first.wait()
            effects.results[key] = "done once"
            await step_results.settle(conn, CONSUMER, effects, [_reply()])

    async def second() -> step_results.Effects:
        await claimed_first.wait()
        async with transaction(engine) as conn:
            return await step_results.claim(conn, CONSUMER, {new_message_id(): key})

    running = asyncio.create_task(first())
    waiting = asyncio.create_task(second())
    await claimed_first.wait()
    finish_first.set()
    await running
    effects = await waiting
    assert effects.claimed == set()
    assert effects.stored == {key: "done once"}
