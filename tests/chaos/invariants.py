"""The checks after a chaos run (issue 7), on the private Postgres and RabbitMQ.

The examples' ledgers have no unique constraint: a second effect is a second row. Their rows
are compared with what the plan asked for (an order's `fail_at`, a trip's input) and with what
the history says happened. A trip's rows include those of its child payment saga.

The event traffic's orders (`event_traffic`) are checked from the events tables, the waits,
each instance's history and the harness's queue of the events the saga emitted.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

from examples.orders.saga import STEP_NAMES
from tests.chaos.app import PLACED_ORDER_STEPS, placed_order
from tests.chaos.event_traffic import FULFILLED
from tests.support.travel import CHILD, Trip, child_of, ledger_problems, trip_rows

if TYPE_CHECKING:
    from tests.chaos.event_traffic import PlacedOrder

COMPENSATION_OF = {
    "reserve_credit": "release_credit",
    "reserve_stock": "release_stock",
    "charge": "refund",
}
TERMINAL = {"completed", "compensated", "failed"}
PLANNED_FAILURES = {"TripRejected", "ChildFailed"}
"""The failures a trip's input asks for (`fail_at`), and its node's when the child's step fails."""


def expected_ledger(fail_at: str | None) -> list[tuple[str, str]]:
    """The ledger an instance leaves when it goes the way its input asks."""
    if fail_at is None:
        return [(step, step) for step in STEP_NAMES]
    done = STEP_NAMES[: STEP_NAMES.index(fail_at)]
    undo = [(s, COMPENSATION_OF[s]) for s in reversed(done) if s in COMPENSATION_OF]
    return [(s, s) for s in done] + undo


@dataclass
class Check:
    name: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.ok = False
        if len(self.problems) < 25:
            self.problems.append(problem)
        elif len(self.problems) == 25:
            self.problems.append("… (more)")

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems}


@dataclass
class Facts:
    """What the database says after draining."""

    statuses: dict[str, str]
    sagas: dict[str, tuple[str, str | None]]
    """Each instance's saga name and correlation key, by id."""
    ledger: dict[str, list[tuple[str, str]]]
    travel_ledger: dict[str, list[tuple[int, str, str, str, str]]]
    """The travel example's rows (id, instance id, step, action, ref), by instance id."""
    history: dict[str, list[dict[str, Any]]]
    outbox_rows: int
    outbox_oldest_seconds: float
    step_results: int
    worker_inbox: int
    orchestrator_inbox: int
    dead_letters: list[dict[str, Any]]
    events: list[dict[str, Any]]
    """warren.events: source, event_id, type, started, reached (and seq), every row."""
    deliveries: list[tuple[int, str, str]]
    """warren.event_deliveries: (event seq, instance id, wait key)."""
    waits: list[tuple[str, str]]
    """warren.waits: (instance id, wait key), the waits still under way."""


async def gather_facts(dsn: str) -> Facts:
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        rows = await conn.fetch(
            "SELECT id::text AS id, status, saga_name, correlation_key FROM warren.instances"
        )
        statuses = {r["id"]: r["status"] for r in rows}
        sagas = {r["id"]: (r["saga_name"], r["correlation_key"]) for r in rows}
        ledger: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
        for r in await conn.fetch(
            "SELECT instance_id, step, action FROM orders_example.ledger ORDER BY id"
        ):
            ledger[str(r["instance_id"])].append((r["step"], r["action"]))
        travel: dict[str, list[tuple[int, str, str, str, str]]] = collections.defaultdict(list)
        for r in await conn.fetch(
            "SELECT id, instance_id::text AS instance_id, step, action, ref "
            "FROM travel_example.ledger"
        ):
            travel[r["instance_id"]].append(tuple(r))
        history: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for r in await conn.fetch(
            "SELECT instance_id, seq, type, step, phase, attempt, data FROM warren.history "
            "ORDER BY instance_id, seq"
        ):
            history[str(r["instance_id"])].append(dict(r))
        oldest = await conn.fetchval(
            "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM warren.outbox"
        )
        return Facts(
            statuses=statuses,
            sagas=sagas,
            ledger=dict(ledger),
            travel_ledger=dict(travel),
            history=dict(history),
            outbox_rows=await conn.fetchval("SELECT count(*) FROM warren.outbox"),
            outbox_oldest_seconds=float(oldest or 0),
            step_results=await conn.fetchval(
                "SELECT count(*) FROM warren.step_results WHERE result IS NOT NULL"
            ),
            worker_inbox=await conn.fetchval(
                "SELECT count(*) FROM warren.inbox WHERE consumer LIKE 'pool:%'"
            ),
            orchestrator_inbox=await conn.fetchval(
                "SELECT count(*) FROM warren.inbox WHERE consumer = 'orchestrator'"
            ),
            dead_letters=[
                dict(r)
                for r in await conn.fetch(
                    "SELECT message_id, kind, reason, origin_routing_key, origin_queue "
                    "FROM warren.dead_letters ORDER BY id"
                )
            ],
            events=[
                dict(r)
                for r in await conn.fetch(
                    "SELECT seq, source, event_id, type, started, reached FROM warren.events"
                )
            ],
            deliveries=[
                (r["event_seq"], r["instance_id"], r["wait_key"])
                for r in await conn.fetch(
                    "SELECT event_seq, instance_id::text AS instance_id, wait_key "
                    "FROM warren.event_deliveries"
                )
            ],
            waits=[
                (r["instance_id"], r["wait_key"])
                for r in await conn.fetch(
                    "SELECT instance_id::text AS instance_id, wait_key FROM warren.waits"
                )
            ],
        )
    finally:
        await conn.close()


@dataclass
class Verdict:
    checks: list[Check]
    double_applied: int
    lost: int
    by_status: dict[str, int]
    deviations: dict[str, int]
    """Why instances went otherwise than their input asked (legitimately), by cause."""

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def _applied_in_history(history: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    forward = [e["step"] for e in history if e["type"] in ("step_succeeded", "step_succeeded_late")]
    undone = [e["step"] for e in history if e["type"] == "compensation_succeeded"]
    return forward, undone


def _first_failure(history: list[dict[str, Any]]) -> str:
    for event in history:
        if event["type"] in ("step_failed", "attempt_timed_out", "saga_deadline_exceeded"):
            data = event.get("data") or {}
            failure = data.get("failure") if isinstance(data, dict) else None
            kind = failure.get("type") if isinstance(failure, dict) else None
            return f"{event['type']}:{kind or '?'}"
    return "unknown"


ENDED = "1. every started saga ended completed or compensated"
EXACT = "2. each effect and each compensation exactly once, in reverse order"
CONSISTENT = "3b. ledger, history and step results agree"


@dataclass
class _Tally:
    """The saga checks, filled in instance by instance."""

    ended: Check = field(default_factory=lambda: Check(ENDED))
    exact: Check = field(default_factory=lambda: Check(EXACT))
    consistent: Check = field(default_factory=lambda: Check(CONSISTENT))
    lost: int = 0
    double: int = 0
    by_status: collections.Counter[str] = field(default_factory=collections.Counter)
    deviations: collections.Counter[str] = field(default_factory=collections.Counter)

    def ended_well(
        self, instance_id: str, status: str | None, plan: object, *, count: bool = True
    ) -> bool:
        """Count its status (unless told not to: a child saga); a saga not ended is lost."""
        if count:
            self.by_status[status or "missing"] += 1
        if status in TERMINAL:
            return True
        self.lost += 1
        self.ended.fail(f"{instance_id} ({plan}) is {status or 'missing'}")
        return False

    def failed_only_by_compensation(
        self, instance_id: str, *histories: list[dict[str, Any]]
    ) -> None:
        if not any(e["type"] == "compensation_failed" for h in histories for e in h):
            self.ended.fail(f"{instance_id} failed without a failed compensation")
        self.deviations["failed:compensation_failed"] += 1

    def seq_contiguous(self, instance_id: str, history: list[dict[str, Any]]) -> None:
        seqs = [e["seq"] for e in history]
        if seqs != list(range(1, len(seqs) + 1)):
            self.consistent.fail(f"{instance_id}: history seq has gaps: {seqs}")


def check_sagas(started: dict[str, str | None], trips: dict[str, Trip], facts: Facts) -> Verdict:
    """Invariants 1 and 2 (and 3's consistency of history and ledger), for the orders started
    (by id: where each was asked to fail) and the trips."""
    tally = _Tally()
    for instance_id, fail_at in started.items():
        _check_order(tally, instance_id, fail_at, facts)
    for trip_id, trip in trips.items():
        _check_trip(tally, trip_id, trip, facts)

    ledger_rows = sum(len(rows) for rows in facts.ledger.values())
    ledger_rows += sum(len(rows) for rows in facts.travel_ledger.values())
    if facts.step_results != ledger_rows:
        tally.consistent.fail(
            f"{facts.step_results} step results recorded, {ledger_rows} ledger rows written"
        )
    if facts.worker_inbox < ledger_rows:
        tally.consistent.fail(
            f"worker inboxes hold {facts.worker_inbox} < {ledger_rows} ledger rows"
        )
    seen = {*started, *trips, *(child_of(trip_id) for trip_id in trips)}
    strays = (set(facts.ledger) | set(facts.travel_ledger)) - seen
    extra = [i for i in strays if facts.statuses.get(i) not in TERMINAL]
    if extra:
        tally.ended.fail(f"instances the load did not see started and not ended: {extra[:5]}")
    return Verdict(
        checks=[tally.ended, tally.exact, tally.consistent],
        double_applied=tally.double,
        lost=tally.lost,
        by_status=dict(tally.by_status),
        deviations=dict(tally.deviations),
    )


def _check_order(tally: _Tally, instance_id: str, fail_at: str | None, facts: Facts) -> None:
    status = facts.statuses.get(instance_id)
    if not tally.ended_well(instance_id, status, f"fail_at={fail_at}"):
        return
    exact, consistent = tally.exact, tally.consistent
    history = facts.history.get(instance_id, [])
    if status == "failed":
        tally.failed_only_by_compensation(instance_id, history)
    rows = facts.ledger.get(instance_id, [])
    counts = collections.Counter(rows)
    twice = {row: n for row, n in counts.items() if n > 1}
    if twice:
        tally.double += sum(n - 1 for n in twice.values())
        exact.fail(f"{instance_id}: applied more than once: {twice}")
    expected_status = "completed" if fail_at is None else "compensated"
    if status == expected_status and rows == expected_ledger(fail_at):
        pass
    elif status == expected_status:
        exact.fail(f"{instance_id} ({status}, fail_at={fail_at}): ledger {rows}")
    else:
        tally.deviations[f"{status}:{_first_failure(history)}"] += 1
    # Whatever the outcome: the ledger is what the history says, compensations reversed.
    forward, undone = _applied_in_history(history)
    ledger_forward = [step for step, action in rows if action == step]
    ledger_undone = [step for step, action in rows if action != step]
    if sorted(ledger_forward) != sorted(forward) or sorted(ledger_undone) != sorted(undone):
        consistent.fail(f"{instance_id}: ledger {rows} but history applied {forward}/{undone}")
    if any(step not in ledger_forward for step in ledger_undone):
        exact.fail(f"{instance_id}: compensated a step never applied: {rows}")
    must_undo = [s for s in reversed(ledger_forward) if s in COMPENSATION_OF]
    # A step whose success came after its last attempt timed out is undone when it comes,
    # maybe after the steps before it (docs/failure-handling.md, "Timeouts"): its undo must be
    # there, once, but its place in the order is not checked.
    late = _succeeded_late(history, [])
    for step in late:
        tally.deviations[f"order succeeded late:{step}"] += 1
    in_order = [s for s in ledger_undone if s not in late]
    if status == "compensated" and (
        sorted(ledger_undone) != sorted(must_undo)
        or in_order != [s for s in must_undo if s not in late]
    ):
        exact.fail(f"{instance_id}: compensations {ledger_undone}, expected {must_undo}")
    if status == "completed" and (ledger_undone or ledger_forward != STEP_NAMES):
        exact.fail(f"{instance_id}: completed with ledger {rows}")
    tally.seq_contiguous(instance_id, history)


def _succeeded_late(
    history: list[dict[str, Any]], child_history: list[dict[str, Any]]
) -> frozenset[str]:
    """The trip's steps (its child's under CHILD/) whose success came after their last
    attempt had timed out."""
    late = "step_succeeded_late"
    return frozenset(
        [e["step"] for e in history if e["type"] == late]
        + [f"{CHILD}/{e['step']}" for e in child_history if e["type"] == late]
    )


def _check_trip(tally: _Tally, trip_id: str, trip: Trip, facts: Facts) -> None:
    """A trip and its child payment saga (when it ran): the ledger as its input asked, or as
    an unplanned failure explains; whatever the outcome, each effect and undo once, every
    undo of what happened, newest first along each path, and as the histories say."""
    status = facts.statuses.get(trip_id)
    if not tally.ended_well(trip_id, status, trip):
        return
    assert status is not None
    child = child_of(trip_id)
    child_status = facts.statuses.get(child)
    if child_status is not None and not tally.ended_well(child, child_status, "child", count=False):
        return
    history, child_history = facts.history.get(trip_id, []), facts.history.get(child, [])
    if status == "failed":
        tally.failed_only_by_compensation(trip_id, history, child_history)
    rows = trip_rows(
        trip_id, facts.travel_ledger.get(trip_id, []) + facts.travel_ledger.get(child, [])
    )
    twice = collections.Counter((row.step, row.action) for row in rows)
    tally.double += sum(n - 1 for n in twice.values() if n > 1)
    late = _succeeded_late(history, child_history)
    for step in late:  # undone when its success came, maybe after what came before it
        tally.deviations[f"trip succeeded late:{step}"] += 1
    for problem in ledger_problems(status, rows, trip.paths(), late):
        tally.exact.fail(f"trip {trip_id} ({status}, {trip}): {problem}")
    effects = {row.step for row in rows if not row.undoes}
    if status != trip.status or effects != trip.effects():
        cause = _unplanned_failure([*history, *child_history])
        if cause is None:
            tally.exact.fail(f"trip {trip_id} ({status}, {trip}) went otherwise: {rows}")
        else:
            tally.deviations[f"trip {status}:{cause}"] += 1
    # The ledger is what the histories say: the trip's own steps, and its child's under
    # the child's node (whose own events are the child's start and undo, not effects).
    forward, undone = _applied_in_history(history)
    child_forward, child_undone = _applied_in_history(child_history)
    said = sorted(
        [(s, False) for s in forward if s != CHILD]
        + [(s, True) for s in undone if s != CHILD]
        + [(f"{CHILD}/{s}", False) for s in child_forward]
        + [(f"{CHILD}/{s}", True) for s in child_undone]
    )
    if sorted((row.step, row.undoes) for row in rows) != said:
        tally.consistent.fail(f"trip {trip_id}: ledger {rows} but the histories say {said}")
    tally.seq_contiguous(trip_id, history)
    tally.seq_contiguous(child, child_history)


def _unplanned_failure(history: list[dict[str, Any]]) -> str | None:
    """The first failure in `history` that no input asked for (a timeout, say), if any."""
    for event in history:
        if event["type"] in ("step_failed", "attempt_timed_out", "attempt_failed"):
            data = event.get("data") or {}
            failure = data.get("failure") if isinstance(data, dict) else None
            kind = failure.get("type") if isinstance(failure, dict) else None
            if kind not in PLANNED_FAILURES:
                return f"{event['type']}:{kind or '?'}"
        elif event["type"] == "saga_deadline_exceeded":
            return "saga_deadline_exceeded"
    return None


PLACED = "6. each order.placed event started one instance; it completed, each effect once"
APPLIED = "7. each event applied to each instance once; its completion event emitted once"
RECORDED = "8. each event recorded once and taken; no wait left behind"


@dataclass
class EventVerdict:
    checks: list[Check]
    double_applied: int
    lost: int
    """Orders whose instance did not complete: an event lost (or never sent)."""
    summary: dict[str, Any]


def check_events(orders: list[PlacedOrder], facts: Facts, fulfilled: list[str]) -> EventVerdict:
    """Invariants 6 to 8, for the event traffic's orders; `fulfilled` is every copy (its
    event id) of the `order.fulfilled` events the harness's queue received."""
    placed, applied, recorded = Check(PLACED), Check(APPLIED), Check(RECORDED)
    rows = collections.Counter((e["source"], e["event_id"]) for e in facts.events)
    row_of = {(e["source"], e["event_id"]): e for e in facts.events}
    delivered: dict[str, list[int]] = collections.defaultdict(list)
    for seq, instance_id, _ in facts.deliveries:
        delivered[instance_id].append(seq)
    keys = collections.Counter(
        key for saga, key in facts.sagas.values() if saga == placed_order.name
    )
    emitted = collections.Counter(fulfilled)
    lost = double = 0
    for order in orders:
        for failure in order.failures:
            placed.fail(f"{order.order_id}: a copy was never accepted: {failure}")
        instance_id = order.instance_id
        status = facts.statuses.get(instance_id)
        if status != "completed":
            lost += 1
            placed.fail(f"{order.order_id} ({order.timing}): instance {instance_id} is {status}")
        if keys[order.order_id] != 1:
            placed.fail(f"{order.order_id}: {keys[order.order_id]} instances for its key")
        ledger = facts.ledger.get(instance_id, [])
        double += sum(n - 1 for n in collections.Counter(ledger).values() if n > 1)
        if status == "completed" and ledger != [(s, s) for s in PLACED_ORDER_STEPS]:
            placed.fail(f"{order.order_id}: completed with ledger {ledger}")
        for event in (order.placed, order.captured):
            if rows[(event.source, event.id)] != 1:
                recorded.fail(f"{event.type} {event.id}: {rows[(event.source, event.id)]} rows")
        placed_row = row_of.get((order.placed.source, order.placed.id))
        if placed_row is not None and placed_row["started"] != 1:
            recorded.fail(f"{order.placed.id} started {placed_row['started']} instances")
        captured_row = row_of.get((order.captured.source, order.captured.id))
        if captured_row is not None:
            if captured_row["reached"] != 1:
                recorded.fail(f"{order.captured.id} reached {captured_row['reached']} waits")
            if delivered.get(instance_id) != [captured_row["seq"]]:
                applied.fail(
                    f"{order.order_id}: delivered events {delivered.get(instance_id)}, "
                    f"expected [{captured_row['seq']}] ({order.captured.id})"
                )
        _check_order_history(applied, order, facts.history.get(instance_id, []), emitted)
    sent = {(o.placed.source, o.placed.id) for o in orders}
    sent |= {(o.captured.source, o.captured.id) for o in orders}
    for source, event_id in sorted(set(rows) - sent):
        recorded.fail(f"an event the run never sent was recorded: {source} {event_id}")
    for instance_id, key in facts.waits:
        if facts.statuses.get(instance_id) in TERMINAL | {None}:
            recorded.fail(f"wait {key} of {instance_id} ({facts.statuses.get(instance_id)}) left")
    return EventVerdict(
        checks=[placed, applied, recorded],
        double_applied=double,
        lost=lost,
        summary=_traffic(orders, facts, fulfilled),
    )


def _check_order_history(
    check: Check, order: PlacedOrder, history: list[dict[str, Any]], emitted: dict[str, int]
) -> None:
    """The wait began once and received this order's payment once; the completion event
    was emitted once, with its data, and reached the harness's queue."""
    name = order.order_id
    types = collections.Counter(e["type"] for e in history)
    if types["wait_started"] != 1 or types["wait_timed_out"]:
        check.fail(f"{name}: wait_started {types['wait_started']}, timed out: {types}")
    received = [e["data"]["event"] for e in history if e["type"] == "event_received"]
    ids = [(event["source"], event["id"]) for event in received]
    if ids != [(order.captured.source, order.captured.id)]:
        check.fail(f"{name}: event_received {ids}, expected once {order.captured.id}")
    said = [e["data"] for e in history if e["type"] == "event_emitted"]
    if [(e["type"], e["data"]) for e in said] != [
        (FULFILLED, {"order_id": name, "payment": order.captured.id})
    ]:
        check.fail(f"{name}: emitted {said}")
    elif not emitted.get(said[0]["id"]):
        check.fail(f"{name}: its {FULFILLED} {said[0]['id']} never reached the broker")
    seqs = [e["seq"] for e in history]
    if seqs != list(range(1, len(seqs) + 1)):
        check.fail(f"{name}: history seq has gaps: {seqs}")


def _traffic(orders: list[PlacedOrder], facts: Facts, fulfilled: list[str]) -> dict[str, Any]:
    """What the event traffic sent and what came of it, for the summary."""
    copies: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for order in orders:
        for send in order.sends:
            copies[send.event.type][send.via] += 1
    return {
        "orders_placed": len(orders),
        "completed": sum(facts.statuses.get(o.instance_id) == "completed" for o in orders),
        "payment_sent": dict(collections.Counter(order.timing for order in orders)),
        "copies_sent": {kind: dict(by_via) for kind, by_via in sorted(copies.items())},
        "events_recorded": len(facts.events),
        "fulfilled_copies_read": len(fulfilled),
    }


def check_outbox(facts: Facts, bound_seconds: float) -> Check:
    check = Check("3a. no outbox row left behind")
    if facts.outbox_rows and facts.outbox_oldest_seconds > bound_seconds:
        check.fail(
            f"{facts.outbox_rows} outbox rows, the oldest {facts.outbox_oldest_seconds:.0f}s old"
        )
    return check


def check_queues(
    queues: dict[str, tuple[int, int, int]], poison_ids: set[str], facts: Facts
) -> Check:
    check = Check("4. queues drained; the dead letters are exactly the injected poison")
    for name, (ready, unacked, _) in sorted(queues.items()):
        if ready or unacked:
            check.fail(f"{name}: {ready} ready, {unacked} unacked")
    recorded = collections.Counter(str(d["message_id"]) for d in facts.dead_letters)
    for message_id, n in recorded.items():
        if message_id not in poison_ids:
            letter = next(d for d in facts.dead_letters if str(d["message_id"]) == message_id)
            check.fail(f"unexpected dead letter {message_id}: {letter['reason']}")
        elif n > 1:
            check.fail(f"poison {message_id} recorded {n} times")
    for message_id in sorted(poison_ids - set(recorded)):
        check.fail(f"poison {message_id} was not recorded in warren.dead_letters")
    return check


def check_consumers(
    queues: dict[str, tuple[int, int, int]], expected: dict[str, int], problems: list[str]
) -> Check:
    check = Check("5. every process reconnected by itself; none hung")
    for name, count in expected.items():
        got = queues.get(name, (0, 0, 0))[2]
        if got != count:
            check.fail(f"{name}: {got} consumers, expected {count}")
    for problem in problems:
        check.fail(problem)
    return check
