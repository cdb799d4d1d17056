"""The checks after a chaos run (issue 7), on the private Postgres and RabbitMQ.

The example's ledger has no unique constraint: a second effect is a second row. Its rows are
compared with what the plan asked for (`fail_at`) and with what the history says happened.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from examples.orders.saga import STEP_NAMES

COMPENSATION_OF = {
    "reserve_credit": "release_credit",
    "reserve_stock": "release_stock",
    "charge": "refund",
}
TERMINAL = {"completed", "compensated", "failed"}


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
    ledger: dict[str, list[tuple[str, str]]]
    history: dict[str, list[dict[str, Any]]]
    outbox_rows: int
    outbox_oldest_seconds: float
    step_results: int
    worker_inbox: int
    orchestrator_inbox: int
    dead_letters: list[dict[str, Any]]


async def gather_facts(dsn: str) -> Facts:
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        statuses = {
            str(r["id"]): r["status"]
            for r in await conn.fetch("SELECT id, status FROM warren.instances")
        }
        ledger: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
        for r in await conn.fetch(
            "SELECT instance_id, step, action FROM orders_example.ledger ORDER BY id"
        ):
            ledger[str(r["instance_id"])].append((r["step"], r["action"]))
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
            ledger=dict(ledger),
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


def check_sagas(started: dict[str, str | None], facts: Facts) -> Verdict:
    """Invariants 1 and 2 (and 3's consistency of history and ledger)."""
    ended = Check("1. every started saga ended completed or compensated")
    exact = Check("2. each effect and each compensation exactly once, in reverse order")
    consistent = Check("3b. ledger, history and step results agree")
    lost = 0
    double = 0
    by_status: collections.Counter[str] = collections.Counter()
    deviations: collections.Counter[str] = collections.Counter()

    for instance_id, fail_at in started.items():
        status = facts.statuses.get(instance_id)
        by_status[status or "missing"] += 1
        if status not in TERMINAL:
            lost += 1
            ended.fail(f"{instance_id} (fail_at={fail_at}) is {status or 'missing'}")
            continue
        history = facts.history.get(instance_id, [])
        if status == "failed":
            if not any(e["type"] == "compensation_failed" for e in history):
                ended.fail(f"{instance_id} failed without a failed compensation")
            deviations["failed:compensation_failed"] += 1
        rows = facts.ledger.get(instance_id, [])
        counts = collections.Counter(rows)
        twice = {row: n for row, n in counts.items() if n > 1}
        if twice:
            double += sum(n - 1 for n in twice.values())
            exact.fail(f"{instance_id}: applied more than once: {twice}")
        expected_status = "completed" if fail_at is None else "compensated"
        if status == expected_status and rows == expected_ledger(fail_at):
            pass
        elif status == expected_status:
            exact.fail(f"{instance_id} ({status}, fail_at={fail_at}): ledger {rows}")
        else:
            deviations[f"{status}:{_first_failure(history)}"] += 1
        # Whatever the outcome: the ledger is what the history says, compensations reversed.
        forward, undone = _applied_in_history(history)
        ledger_forward = [step for step, action in rows if action == step]
        ledger_undone = [step for step, action in rows if action != step]
        if sorted(ledger_forward) != sorted(forward) or sorted(ledger_undone) != sorted(undone):
            consistent.fail(f"{instance_id}: ledger {rows} but history applied {forward}/{undone}")
        if any(step not in ledger_forward for step in ledger_undone):
            exact.fail(f"{instance_id}: compensated a step never applied: {rows}")
        must_undo = [s for s in reversed(ledger_forward) if s in COMPENSATION_OF]
        if status == "compensated" and ledger_undone != must_undo:
            exact.fail(f"{instance_id}: compensations {ledger_undone}, expected {must_undo}")
        if status == "completed" and (ledger_undone or ledger_forward != STEP_NAMES):
            exact.fail(f"{instance_id}: completed with ledger {rows}")
        seqs = [e["seq"] for e in history]
        if seqs != list(range(1, len(seqs) + 1)):
            consistent.fail(f"{instance_id}: history seq has gaps: {seqs}")

    ledger_rows = sum(len(rows) for rows in facts.ledger.values())
    if facts.step_results != ledger_rows:
        consistent.fail(
            f"{facts.step_results} step results recorded, {ledger_rows} ledger rows written"
        )
    if facts.worker_inbox < ledger_rows:
        consistent.fail(f"worker inboxes hold {facts.worker_inbox} < {ledger_rows} ledger rows")
    strays = set(facts.ledger) - set(started)
    extra = [i for i in strays if facts.statuses.get(i) not in TERMINAL]
    if extra:
        ended.fail(f"instances the load did not see started and not ended: {extra[:5]}")
    return Verdict(
        checks=[ended, exact, consistent],
        double_applied=double,
        lost=lost,
        by_status=dict(by_status),
        deviations=dict(deviations),
    )


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
