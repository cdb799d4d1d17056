"""Output for people (aligned tables, colour on a terminal) and for scripts (--json)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import click
import msgspec

from orchestrator.definitions import Saga

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from orchestrator.api.schema import (
        DeadLetterDetail,
        DeadLetterRow,
        DefinitionSummary,
        DefinitionVersions,
        HistoryRow,
        InstanceRow,
        InstanceView,
        NodeView,
        PoolView,
        Verification,
    )
    from orchestrator.messaging.failure import Failure

STATUS_COLOURS = {
    "completed": "green",
    "succeeded": "green",
    "compensated": "yellow",
    "compensating": "yellow",
    "retry_wait": "yellow",
    "compensation_retry_wait": "yellow",
    "running": "cyan",
    "failed": "red",
    "compensation_failed": "red",
    "pending": "bright_black",
    "skipped": "bright_black",
}


def emit_json(value: Any) -> None:
    click.echo(msgspec.json.encode(value).decode())


def status(text: str) -> str:
    return click.style(text, fg=STATUS_COLOURS.get(text))


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if value else "-"


def failure(value: Failure) -> str:
    return f"{value.type}: {value.message}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns aligned on the visible text (colour codes do not count)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(click.unstyle(cell)))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c + " " * (w - len(click.unstyle(c))) for c, w in zip(cells, widths, strict=True)
        )

    click.echo(click.style(line(headers), bold=True).rstrip())
    for row in rows:
        click.echo(line(row).rstrip())


def instance(view: InstanceView) -> None:
    title = click.style(str(view.id), bold=True)
    click.echo(f"{title}  {view.saga} v{view.version}  {status(view.status)}")
    click.echo(f"created {when(view.created_at)}   updated {when(view.updated_at)}")
    if view.failure is not None:
        click.echo(f"failure: {failure(view.failure)}")
    rows = []
    for step in view.steps:
        comp = step.compensation
        undo = ""
        if comp is not None:
            undo = f"{comp.command} x{comp.attempts}" if comp.attempts else comp.command
        error = failure(step.error) if step.error else ""
        if comp is not None and comp.error is not None:  # the latest trouble of the step
            error = f"compensation {failure(comp.error)}"
        rows.append(
            [
                step.name,
                step.pool,
                status(step.status),
                str(step.attempts),
                when(step.finished_at),
                undo,
                error,
            ]
        )
    if view.parent is not None:
        parent = view.parent
        where = f"{parent.saga} v{parent.version}, step {parent.step}"
        click.echo(f"child of {parent.instance_id}  {where}")
    click.echo()
    table(["STEP", "POOL", "STATUS", "ATTEMPTS", "FINISHED", "COMPENSATION", "ERROR"], rows)
    if view.nodes:
        click.echo()
        headers = ["NODE", "KIND", "STATUS", "CASE / ITEMS", "STARTED", "BRANCHES / ITEMS"]
        table(headers, [_node_row(n) for n in view.nodes])
    if view.children:
        click.echo()
        table(
            ["CHILD STEP", "SAGA", "STATUS", "INSTANCE"],
            [
                [
                    c.step,
                    f"{c.saga} v{c.version}" if c.version is not None else c.saga,
                    status(c.status),
                    str(c.instance_id or "-"),
                ]
                for c in view.children
            ],
        )


def _node_row(node: NodeView) -> list[str]:
    """A choice's case; a parallel's branches and a map's items: how many started, and where
    each branch stands (how many items stand where)."""
    if node.kind == "choice":
        what, started = node.case or "-", ""
    elif node.kind == "map":
        what = "-" if node.items is None else f"{node.items} items"
        started = "" if node.items is None else f"{node.started}/{node.items}"
    else:
        what, started = "", f"{node.started}/{node.branches}"
    if node.kind == "map":  # items may be many: how many stand where
        counts = Counter(p.status for p in node.parts)
        parts = ", ".join(f"{count} {status(state)}" for state, count in counts.items())
    else:
        parts = ", ".join(f"{p.label} {status(p.status)}" for p in node.parts)
    return [node.key, node.kind, status(node.status), what, started, parts]


def history(rows: Sequence[HistoryRow]) -> None:
    table(
        ["SEQ", "TIME", "EVENT", "STEP", "PHASE", "ATTEMPT", "POOL"],
        [
            [
                str(r.seq),
                when(r.recorded_at),
                status(r.type.removeprefix("saga_")) if r.type.startswith("saga_") else r.type,
                r.step or "",
                r.phase or "",
                str(r.attempt or ""),
                r.pool or "",
            ]
            for r in rows
        ],
    )


# What `start --wait` prints for a history event: the step's new state, in the words of
# `warren status`. The saga's start and end are said by the lines around them.
_PROGRESS = {
    "step_dispatched": "running",
    "step_succeeded": "succeeded",
    "step_succeeded_late": "succeeded late",
    "attempt_timed_out": "timed out",
    "step_failed": "failed",
    "compensation_dispatched": "compensating",
    "compensation_succeeded": "compensated",
    "compensation_failed": "compensation_failed",
    "reply_ignored": "reply ignored",
}
_UNSAID = {"saga_started", "saga_completed", "saga_compensated", "saga_failed"}


def progress(row: HistoryRow) -> None:
    """One line of `start --wait`'s progress."""
    if row.type in _UNSAID:
        return
    if row.type == "attempt_failed":  # always followed by a retry timer
        label = "retry_wait" if row.phase == "forward" else "compensation_retry_wait"
    else:
        label = _PROGRESS.get(row.type, row.type.removeprefix("saga_").replace("_", " "))
    attempt = f"  attempt {row.attempt}" if row.attempt else ""
    click.echo(f"  {row.seq:>3}  {row.step or 'saga':<24} {status(label)}{attempt}")


def instances(rows: Sequence[InstanceRow]) -> None:
    table(
        ["ID", "SAGA", "STATUS", "CREATED", "UPDATED", "CORRELATION"],
        [
            [
                str(i.id),
                f"{i.saga} v{i.version}",
                status(i.status),
                when(i.created_at),
                when(i.updated_at),
                i.correlation_key or "",
            ]
            for i in rows
        ],
    )


def definitions(rows: Sequence[DefinitionSummary]) -> None:
    table(
        ["NAME", "LATEST", "VERSIONS", "REGISTERED"],
        [
            [d.name, str(d.latest_version), ",".join(map(str, d.versions)), when(d.registered_at)]
            for d in rows
        ],
    )


def definition(detail: DefinitionVersions) -> None:
    """Every version of one definition, a table of its steps each."""
    for stored in detail.versions:
        click.echo(
            click.style(f"{detail.name} v{stored.version}", bold=True)
            + f"  {stored.content_hash[:12]}"
        )
        saga = Saga.from_json(msgspec.json.encode(stored.body))
        rows = [
            [
                task.name,
                task.pool,
                task.command_name,
                task.compensation.command if task.compensation is not None else "",
                str(task.retry.max_attempts),
                f"{task.timeout_seconds:g}" if task.timeout_seconds is not None else "",
            ]
            for task in saga.tasks  # inside parallels, choices and maps too: see --graph
        ]
        table(["STEP", "POOL", "COMMAND", "COMPENSATION", "ATTEMPTS", "TIMEOUT"], rows)
        click.echo()


def pools(rows: Sequence[PoolView]) -> None:
    table(
        ["POOL", "READY", "CONSUMERS", "IN FLIGHT", "DISPATCHED 5M", "FAILED 5M"],
        [
            [
                p.name,
                "-" if p.ready is None else str(p.ready),
                "-" if p.consumers is None else str(p.consumers),
                str(p.in_flight),
                str(p.dispatched_recently),
                str(p.failed_recently),
            ]
            for p in rows
        ],
    )


def dead_letters(rows: Sequence[DeadLetterRow]) -> None:
    table(
        ["ID", "RECEIVED", "KIND", "INSTANCE", "FROM", "REASON", "REPLAYED"],
        [
            [
                str(d.id),
                when(d.received_at),
                d.kind or "?",
                str(d.instance_id or ""),
                d.origin_queue or origin(d),
                d.reason[:60],
                when(d.replayed_at) if d.replayed_at else "",
            ]
            for d in rows
        ],
    )


def dead_letter(letter: DeadLetterDetail) -> None:
    kind = letter.kind or "undecodable"
    click.echo(f"dead letter {letter.id}  {kind}  received {when(letter.received_at)}")
    click.echo(f"reason: {letter.reason}")
    click.echo(f"from:   {origin(letter)} ({letter.origin_queue or '-'})")
    click.echo(f"body:   {letter.body}")


def origin(letter: DeadLetterRow) -> str:
    """Exchange / routing key; "" is the default exchange (routing key = the queue)."""
    exchange = "(default exchange)" if letter.origin_exchange == "" else letter.origin_exchange
    return f"{exchange or '?'} / {letter.origin_routing_key or '?'}"


def verification(found: Verification) -> None:
    """One instance's verification: its outcome, and on a mismatch where replay differs."""
    colour = {"ok": "green", "mismatch": "red"}.get(found.outcome, "yellow")
    click.echo(f"{found.instance_id}  {click.style(found.outcome, fg=colour)}  {found.message}")
    if found.outcome == "mismatch":
        where = f"seq {found.seq}" if found.seq is not None else "snapshot"
        click.echo(f"  at {where}, {found.field}:")
        click.echo(f"    recorded: {msgspec.json.encode(found.recorded).decode()}")
        click.echo(f"    replayed: {msgspec.json.encode(found.replayed).decode()}")


def verification_counts(counts: dict[str, int]) -> None:
    total = sum(counts.values())
    click.echo(
        f"verified {total} instances: {counts['ok']} ok, {counts['unverifiable']} unverifiable "
        f"(recorded before causes were kept), {counts['mismatch']} mismatched"
    )
    if counts["mismatch"]:
        click.echo(
            "the mismatched instances' snapshots do not follow from their history: keep both "
            "(warren history ID --json, warren status ID --json) and investigate before "
            "operating them",
            err=True,
        )
