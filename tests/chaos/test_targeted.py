"""Issue 7's targeted (not random) cases, on the shared servers with the usual fixtures.

The other two are covered where they belong:
- two transactions write outbox rows, the later id commits first, both are published:
  tests/integration/test_outbox.py::test_rows_committed_out_of_id_order_are_all_published;
- a relay killed between the broker's confirm and marking the row, the copy dropped by the
  consumer's inbox: tests/e2e/test_exactly_once.py::test_relay_killed_between_confirm_and_delete.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import pytest

from orchestrator.messaging.envelope import Phase
from tests.support.messages import success_reply
from tests.support.probes import EXAMPLE_POOLS
from tests.support.publish import publish_replies
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from tests.conftest import Stack

pytestmark = pytest.mark.e2e


async def test_a_stale_reply_for_an_instance_already_compensated_changes_nothing(
    stack: Stack,
) -> None:
    await stack.up()
    instance_id = await stack.start({"order_id": "S-1", "amount": 5, "fail_at": "charge"})
    assert await stack.probe.wait_terminal(instance_id) == "compensated"
    ledger = await stack.probe.ledger(instance_id)
    assert ledger == [
        ("reserve_credit", "reserve_credit"),
        ("reserve_stock", "reserve_stock"),
        ("reserve_stock", "release_stock"),
        ("reserve_credit", "release_credit"),
    ]
    history = await stack.probe.history(instance_id)

    # Copies of earlier replies, with fresh ids (so no inbox stops them): a forward success of
    # each step that was undone since, and a compensation's success once more.
    stale = [
        success_reply(saga="order", instance_id=instance_id, step="reserve_credit", seq=2),
        success_reply(saga="order", instance_id=instance_id, step="reserve_stock", seq=5),
    ]
    undone = success_reply(saga="order", instance_id=instance_id, step="reserve_stock", seq=12)
    stale.append(msgspec.structs.replace(undone, phase=Phase.COMPENSATE, command="release_stock"))
    await publish_replies(stack.probe.settings, *stale)

    async def ignored() -> int:
        events = await stack.probe.history(instance_id)
        return len([e for e in events if e["type"] == "reply_ignored"])

    await wait_for(ignored, lambda n: n == len(stale), what="the stale replies to be handled")
    after = await stack.probe.history(instance_id)
    assert after[: len(history)] == history
    assert {e["type"] for e in after[len(history) :]} == {"reply_ignored"}
    assert await stack.probe.status(instance_id) == "compensated"
    assert await stack.probe.ledger(instance_id) == ledger
    # The last rows published before (the final reply, say) are deleted a moment after their
    # confirm, by their process's next transaction or its own delete: wait for that.
    await wait_for(
        lambda: stack.probe.count("warren.outbox"), lambda n: n == 0, what="the outbox to empty"
    )
    assert await stack.probe.count("warren.timers") == 0
    for pool in EXAMPLE_POOLS:
        ready, _ = await stack.probe.queue(stack.topology.pool_queue(pool))
        assert ready == 0, f"a command went out to {pool}"
