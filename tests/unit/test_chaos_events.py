"""The chaos run's checks of its event traffic (tests/chaos/invariants.py `check_events`): what
a right run leaves passes, and an event applied twice, a lost order, a second instance for one
order and a wait left behind are each named."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from tests.chaos.app import PLACED_ORDER_STEPS, placed_order
from tests.chaos.event_traffic import FULFILLED, PlacedOrder, draw
from tests.chaos.invariants import APPLIED, PLACED, RECORDED, Facts, check_events

EMITTED_ID = "e0000000-0000-0000-0000-000000000001"


def _order() -> PlacedOrder:
    return draw(random.Random(1), seed=7, n=1)


def _history(order: PlacedOrder) -> list[dict[str, Any]]:
    received = {"id": order.captured.id, "source": order.captured.source, "data": {}}
    emitted = {
        "id": EMITTED_ID,
        "type": FULFILLED,
        "data": {"order_id": order.order_id, "payment": order.captured.id},
    }
    types = [
        ("saga_started", {}),
        ("wait_started", {}),
        ("event_received", {"event": received}),
        ("saga_completed", {}),
        ("event_emitted", emitted),
    ]
    return [{"seq": n, "type": t, "data": d} for n, (t, d) in enumerate(types, start=1)]


def _facts(order: PlacedOrder) -> Facts:
    """What the database holds when everything went right for `order`."""
    instance_id = order.instance_id
    return Facts(
        statuses={instance_id: "completed"},
        sagas={instance_id: (placed_order.name, order.order_id)},
        ledger={instance_id: [(step, step) for step in PLACED_ORDER_STEPS]},
        travel_ledger={},
        history={instance_id: _history(order)},
        outbox_rows=0,
        outbox_oldest_seconds=0.0,
        step_results=3,
        worker_inbox=3,
        orchestrator_inbox=3,
        dead_letters=[],
        events=[
            {
                "seq": 1,
                "source": order.placed.source,
                "event_id": order.placed.id,
                "type": order.placed.type,
                "started": 1,
                "reached": 0,
            },
            {
                "seq": 2,
                "source": order.captured.source,
                "event_id": order.captured.id,
                "type": order.captured.type,
                "started": 0,
                "reached": 1,
            },
        ],
        deliveries=[(2, instance_id, "payment")],
        waits=[],
    )


def _failed(facts: Facts, order: PlacedOrder) -> dict[str, list[str]]:
    verdict = check_events([order], facts, [EMITTED_ID])
    return {check.name: check.problems for check in verdict.checks if not check.ok}


def test_a_right_run_passes() -> None:
    order = _order()
    verdict = check_events([order], _facts(order), [EMITTED_ID])
    assert all(check.ok for check in verdict.checks), [c.as_json() for c in verdict.checks]
    assert verdict.lost == verdict.double_applied == 0
    assert verdict.summary["completed"] == 1


def test_an_event_applied_twice_is_named() -> None:
    order = _order()
    facts = _facts(order)
    history = facts.history[order.instance_id]
    twice = [
        *history[:3],
        {**history[2], "seq": 4},
        *({**e, "seq": e["seq"] + 1} for e in history[3:]),
    ]
    facts.history[order.instance_id] = twice
    assert list(_failed(facts, order)) == [APPLIED]


def test_a_lost_payment_leaves_the_order_running_and_is_counted() -> None:
    order = _order()
    facts = replace(_facts(order), statuses={order.instance_id: "running"})
    facts.waits.append((order.instance_id, "payment"))
    verdict = check_events([order], facts, [EMITTED_ID])
    assert verdict.lost == 1
    assert not next(c for c in verdict.checks if c.name == PLACED).ok


def test_a_second_instance_for_one_order_is_named() -> None:
    order = _order()
    facts = _facts(order)
    facts.sagas["00000000-0000-0000-0000-0000000000ff"] = (placed_order.name, order.order_id)
    assert list(_failed(facts, order)) == [PLACED]


def test_a_wait_left_behind_an_ended_instance_is_named() -> None:
    order = _order()
    facts = _facts(order)
    facts.waits.append((order.instance_id, "payment"))
    assert list(_failed(facts, order)) == [RECORDED]


def test_a_completion_event_that_never_reached_the_broker_is_named() -> None:
    order = _order()
    verdict = check_events([order], _facts(order), [])
    assert [c.name for c in verdict.checks if not c.ok] == [APPLIED]
