"""`warren signal` and `warren events`: signals to one instance, domain events through Warren."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from orchestrator.cli import render
from orchestrator.cli.operate import (
    _call,
    _read_input,
    _show,
    _show_page,
    api_url_option,
    json_option,
)

if TYPE_CHECKING:
    from orchestrator.api.schema import EventReceipt, EventRow, SignalResponse


@click.command()
@click.argument("instance_id")
@click.argument("name")
@click.option("--data", default="null", show_default=True, help="JSON the wait receives, or @file.")
@click.option("--id", "signal_id", help="Your id for it: sending it again changes nothing.")
@api_url_option
@json_option
def signal(
    instance_id: str, name: str, data: str, signal_id: str | None, api_url: str, as_json: bool
) -> None:
    """Send signal NAME to an instance (its WaitFor(signal=NAME) takes it)."""
    payload = _read_input(data, "--data")
    sent = _call(api_url, lambda c: c.signal(instance_id, name, payload, signal_id=signal_id))
    _show(sent, as_json, _signal_text)


def _signal_text(sent: SignalResponse) -> None:
    how = {
        "delivered": "a wait took it",
        "kept": "kept until a wait for it begins",
        "duplicate": "sent before with this id: nothing changed",
    }[sent.outcome]
    click.echo(f"signal {sent.signal} ({sent.id}) to {sent.instance_id}: {how}")


@click.group()
def events() -> None:
    """Domain events: publish one through Warren, list and show those received."""


@events.command(name="publish")
@click.argument("type_")
@click.option("--source", required=True, help="Who it comes from (a URI reference).")
@click.option("--data", default="null", show_default=True, help="JSON data, or @file.json.")
@click.option("--id", "event_id", help="Its id within the source (default: a new UUID).")
@click.option("--subject", help="What it is about (CloudEvents subject).")
@click.option("--dataversion", default=1, show_default=True, type=click.IntRange(1))
@api_url_option
@json_option
def events_publish(
    type_: str,
    source: str,
    data: str,
    event_id: str | None,
    subject: str | None,
    dataversion: int,
    api_url: str,
    as_json: bool,
) -> None:
    """Publish an event of type TYPE_: triggers start sagas, waits take it, others get it."""
    payload = _read_input(data, "--data")
    receipt = _call(
        api_url,
        lambda c: c.publish_event(
            type_,
            payload,
            source=source,
            id=event_id,
            subject=subject,
            dataversion=dataversion,
        ),
    )
    _show(receipt, as_json, _receipt_text)


def _receipt_text(receipt: EventReceipt) -> None:
    if receipt.duplicate:
        click.echo(f"event {receipt.id} from {receipt.source} was received before: nothing done")
        return
    click.echo(f"event {receipt.type} {receipt.id} received (#{receipt.seq})")
    for instance_id in receipt.started:
        click.echo(f"  started {instance_id}")
    for reached in receipt.reached:
        click.echo(f"  reached {reached.instance_id} (wait {reached.wait})")
    for problem in receipt.problems:
        click.echo(f"  problem: {problem}")
    if not (receipt.started or receipt.reached):
        click.echo("  matched nothing yet: kept for a wait that begins later")


@events.command(name="list")
@click.option("--type", "type_", help="Only this event type.")
@click.option("--unmatched", is_flag=True, help="Only events that started and reached nothing.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--before", "before_seq", type=int, help="The next_before_seq of a previous page.")
@api_url_option
@json_option
def events_list(
    type_: str | None,
    unmatched: bool,
    limit: int,
    before_seq: int | None,
    api_url: str,
    as_json: bool,
) -> None:
    """List received events, newest first."""
    page = _call(
        api_url,
        lambda c: c.events(type=type_, unmatched=unmatched, before_seq=before_seq, limit=limit),
    )
    _show_page(page, as_json, _rows, "--before", page.next_before_seq)


def _rows(rows: list[EventRow]) -> None:
    render.table(
        ["SEQ", "RECEIVED", "TYPE", "SOURCE", "ID", "DID"],
        [
            [
                str(row.seq),
                render.when(row.received_at),
                row.type,
                row.source,
                row.id,
                f"started {row.started}, reached {row.reached}"
                if row.started or row.reached
                else "unmatched (kept)",
            ]
            for row in rows
        ],
    )


@events.command(name="show")
@click.argument("seq", type=int)
@api_url_option
@json_option
def events_show(seq: int, api_url: str, as_json: bool) -> None:
    """Show one received event with its data."""
    _show(_call(api_url, lambda c: c.event(seq)), as_json, _event_text)


def _event_text(row: EventRow) -> None:
    _rows([row])
    render.emit_json({"subject": row.subject, "time": row.time, "data": row.data, **row.attributes})
    if row.problems:
        click.echo(f"problems: {row.problems}")


def register_commands(group: click.Group) -> None:
    group.add_command(signal)
    group.add_command(events)
