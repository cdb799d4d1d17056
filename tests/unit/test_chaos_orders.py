"""The chaos run's checks of an order's ledger (tests/chaos/invariants.py `check_sagas`): a step
that succeeded after its last attempt timed out may be undone after the steps before it, and
only such a step; its undo must still be there."""

from __future__ import annotations

from typing import Any

from tests.chaos.invariants import EXACT, Facts, check_sagas

ORDER = "00000000-0000-0000-0000-0000000000a1"

# reserve_credit and reserve_stock done; charge timed out three times, so the order
# compensated; then charge's success came, and it was undone last.
LEDGER = [
    ("reserve_credit", "reserve_credit"),
    ("reserve_stock", "reserve_stock"),
    ("reserve_stock", "release_stock"),
    ("reserve_credit", "release_credit"),
    ("charge", "charge"),
    ("charge", "refund"),
]
EVENTS = [
    ("saga_started", None),
    ("step_succeeded", "reserve_credit"),
    ("step_succeeded", "reserve_stock"),
    ("attempt_timed_out", "charge"),
    ("attempt_timed_out", "charge"),
    ("attempt_timed_out", "charge"),
    ("step_failed", "charge"),
    ("compensation_succeeded", "reserve_stock"),
    ("compensation_succeeded", "reserve_credit"),
    ("saga_compensated", None),
    ("step_succeeded_late", "charge"),
    ("compensation_succeeded", "charge"),
    ("saga_compensated", None),
]


def _facts(ledger: list[tuple[str, str]], events: list[tuple[str, str | None]]) -> Facts:
    history: list[dict[str, Any]] = [
        {"seq": n, "type": kind, "step": step, "data": {}}
        for n, (kind, step) in enumerate(events, start=1)
    ]
    return Facts(
        statuses={ORDER: "compensated"},
        sagas={ORDER: ("order", None)},
        ledger={ORDER: ledger},
        travel_ledger={},
        history={ORDER: history},
        outbox_rows=0,
        outbox_oldest_seconds=0.0,
        step_results=len(ledger),
        worker_inbox=len(ledger),
        orchestrator_inbox=len(ledger),
        dead_letters=[],
        events=[],
        deliveries=[],
        waits=[],
    )


def _exact_problems(facts: Facts) -> list[str]:
    verdict = check_sagas({ORDER: None}, {}, facts)
    return next(check.problems for check in verdict.checks if check.name == EXACT)


def test_a_step_that_succeeded_late_may_be_undone_after_the_steps_before_it() -> None:
    verdict = check_sagas({ORDER: None}, {}, _facts(LEDGER, EVENTS))
    assert verdict.ok, [check.problems for check in verdict.checks]
    assert verdict.deviations["order succeeded late:charge"] == 1


def test_the_undo_of_a_step_that_succeeded_late_must_be_there() -> None:
    ledger = LEDGER[:-1]
    events = [e for e in EVENTS if e != ("compensation_succeeded", "charge")]
    assert _exact_problems(_facts(ledger, events))


def test_only_a_step_that_succeeded_late_is_exempt_from_the_order() -> None:
    # The same ledger, but charge succeeded in time: undoing it last is out of order.
    events = [
        ("step_succeeded", "charge") if kind == "step_succeeded_late" else (kind, step)
        for kind, step in EVENTS
    ]
    assert _exact_problems(_facts(LEDGER, events))
