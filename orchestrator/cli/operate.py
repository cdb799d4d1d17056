"""`warren start | start-many | status | history | list | cancel | retry | definitions | pools |
dead-letters | instances verify`: operating sagas through the HTTP API (WARREN_API_URL) with
the Python client.

Exit codes: 0 done; 1 the API refused or could not be reached (the message says why), or
`start-many` had a start refused; 2 usage error. `start --wait` ends with 0 completed,
3 compensated, 4 failed, 5 still running when --timeout ran out. `instances verify` ends
with 7 when an instance does not match its history.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click
import msgspec

from orchestrator.api.schema import MAX_BATCH_STARTS
from orchestrator.cli import render

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from orchestrator.api.schema import BatchStart, DefinitionVersions, InstanceView
    from orchestrator.client import ApiError, StartResult, WarrenClient

T = TypeVar("T")

EXIT_BY_STATUS = {"completed": 0, "compensated": 3, "failed": 4}
EXIT_WAIT_TIMEOUT = 5
EXIT_MISMATCH = 7
"""`instances verify`: an instance's snapshot does not follow from its history."""

api_url_option = click.option(
    "--api-url",
    envvar="WARREN_API_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="The Warren API (WARREN_API_URL).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _instance_options(command: Callable[..., None]) -> Callable[..., None]:
    """The arguments of a command on one instance: its id, the API, `--json`."""
    return click.argument("instance_id")(api_url_option(json_option(command)))


def _show(value: T, as_json: bool, as_text: Callable[[T], None]) -> None:
    """The API's answer as JSON with `--json`, else rendered for a human."""
    if as_json:
        render.emit_json(value)
    else:
        as_text(value)


def _show_page(
    page: Any, as_json: bool, as_rows: Callable[[Any], None], option: str, next_page: object
) -> None:
    """A page of a list, then the `option` that asks for the next one (none after the last)."""
    if as_json:
        render.emit_json(page)
        return
    as_rows(page.items)
    if next_page:
        click.echo(f"\nmore: {option} {next_page}")


def _call(api_url: str, action: Callable[[WarrenClient], Awaitable[Any]]) -> Any:
    from orchestrator.cli import _user_errors
    from orchestrator.client import WarrenClient

    async def run() -> Any:
        async with WarrenClient(api_url) as client:
            return await action(client)

    with _user_errors():
        return asyncio.run(run())


def _read_input(raw: str, option: str = "--input") -> Any:
    """JSON text, or @path to a JSON file (given as `option`)."""
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text()
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {raw[1:]}: {exc.strerror}", param_hint=option
            ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=option) from exc


@click.command()
@click.argument("name")
@click.option(
    "--input", "input_", default="{}", show_default=True, help="JSON input, or @file.json."
)
@click.option("--idempotency-key", help="Repeat the command with it safely: one instance per key.")
@click.option("--version", type=int, help="Pin a definition version (default: the latest).")
@click.option("--correlation-key", help="A key to find the instance by later.")
@click.option(
    "--wait", is_flag=True, help="Show progress until the instance ends; exit code says how."
)
@click.option("--timeout", default=300.0, show_default=True, help="Seconds --wait waits.")
@api_url_option
@json_option
def start(
    name: str,
    input_: str,
    idempotency_key: str | None,
    version: int | None,
    correlation_key: str | None,
    wait: bool,
    timeout: float,
    api_url: str,
    as_json: bool,
) -> None:
    """Start saga NAME."""
    payload = _read_input(input_)

    async def action(client: WarrenClient) -> tuple[Any, InstanceView | None]:
        started = await client.start(
            name,
            payload,
            idempotency_key=idempotency_key,
            version=version,
            correlation_key=correlation_key,
        )
        if not as_json:
            click.echo(_started_line(started))
        if not wait:
            return started, None
        progress = None if as_json else _Progress(client)
        try:
            final = await client.wait(started.id, timeout=timeout, on_update=progress)
        except WaitTimeout as exc:  # its own exit code, not a generic error
            click.echo(str(exc), err=True)
            raise SystemExit(EXIT_WAIT_TIMEOUT) from exc
        return started, final

    from orchestrator.client import WaitTimeout

    started, final = _call(api_url, action)
    if final is None:
        if as_json:
            render.emit_json(started)
        return
    if as_json:
        render.emit_json(final)
    else:
        click.echo(f"ended {render.status(final.status)}")
    raise SystemExit(EXIT_BY_STATUS.get(final.status, 1))


@click.command("start-many")
@click.argument("name")
@click.argument("starts", metavar="FILE", type=click.File("rb"))
@click.option(
    "--batch-size",
    default=MAX_BATCH_STARTS,
    show_default=True,
    type=click.IntRange(1, MAX_BATCH_STARTS),
    help="Starts per request.",
)
@api_url_option
@json_option
def start_many(name: str, starts: IO[bytes], batch_size: int, api_url: str, as_json: bool) -> None:
    """Start saga NAME once per line of FILE (JSON Lines; - reads stdin).

    Each line is a start: {"input": ..., "idempotency_key": ..., "version": ...,
    "correlation_key": ..., "instance_id": ...}, only "input" needed. They go in requests of
    --batch-size; each is started or refused on its own. Exit code 1 when any was refused:
    lines with an idempotency_key can be sent again as they are."""
    asked = _read_starts(starts)

    async def action(client: WarrenClient) -> list[tuple[int, StartResult | ApiError]]:
        outcomes: list[tuple[int, StartResult | ApiError]] = []
        for at in range(0, len(asked), batch_size):
            chunk = asked[at : at + batch_size]
            answered = await client.start_many(name, [start for _, start in chunk])
            done = [(line, outcome) for (line, _), outcome in zip(chunk, answered, strict=True)]
            if not as_json:
                for line, outcome in done:
                    click.echo(f"line {line}  {_started_or_refused(outcome)}")
            outcomes += done
        return outcomes

    from orchestrator.client import ApiError

    outcomes = _call(api_url, action)
    refused = [line for line, outcome in outcomes if isinstance(outcome, ApiError)]
    if as_json:
        render.emit_json([_start_row(line, outcome) for line, outcome in outcomes])
    else:
        click.echo(f"{len(outcomes) - len(refused)} of {len(outcomes)} started or found")
    if refused:
        click.echo(
            f"{len(refused)} refused (lines {', '.join(map(str, refused[:20]))}"
            f"{', …' if len(refused) > 20 else ''}): fix them and send them again",
            err=True,
        )
        raise SystemExit(1)


def _read_starts(lines: IO[bytes]) -> list[tuple[int, BatchStart]]:
    """The starts of a JSON Lines file, with their line numbers (blank lines skipped)."""
    from orchestrator.api.schema import BatchStart

    starts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            starts.append((number, msgspec.json.decode(line, type=BatchStart)))
        except msgspec.ValidationError as exc:
            raise click.BadParameter(f"line {number}: {exc}", param_hint="FILE") from exc
        except msgspec.DecodeError as exc:
            raise click.BadParameter(
                f"line {number} is not a JSON object: {exc}", param_hint="FILE"
            ) from exc
    if not starts:
        raise click.BadParameter("no starts in it (one JSON object per line)", param_hint="FILE")
    return starts


def _started_or_refused(outcome: StartResult | ApiError) -> str:
    from orchestrator.client import ApiError

    if isinstance(outcome, ApiError):
        return f"refused ({outcome.status} {outcome.type.rsplit(':', 1)[-1]}): {outcome}"
    return _started_line(outcome)


def _started_line(started: StartResult) -> str:
    """A start's instance, and whether this request made it."""
    how = "started" if started.created else "already started by an identical request"
    return f"{started.id}  {started.saga} v{started.version}  {how}"


def _start_row(line: int, outcome: StartResult | ApiError) -> dict[str, Any]:
    from orchestrator.client import ApiError

    if isinstance(outcome, ApiError):
        return {"line": line, "status": outcome.status, "problem": outcome.body}
    return {
        "line": line,
        "status": 201 if outcome.created else 200,
        "id": str(outcome.id),
        "saga": outcome.saga,
        "version": outcome.version,
    }


class _Progress:
    """`start --wait`'s progress, from the history rather than the snapshot: one poll can see
    several changes at once, and only `seq` says in which order they happened (compensations
    run newest first)."""

    def __init__(self, client: WarrenClient) -> None:
        self.client = client
        self.shown_seq = 0

    async def __call__(self, view: InstanceView) -> None:
        while True:
            page = await self.client.history(view.id, after_seq=self.shown_seq)
            for row in page.items:
                render.progress(row)
                self.shown_seq = row.seq
            if page.next_after_seq is None:
                return


@click.command()
@_instance_options
def status(instance_id: str, api_url: str, as_json: bool) -> None:
    """Show an instance: status and every step."""
    _show(_call(api_url, lambda c: c.get(instance_id)), as_json, render.instance)


@click.command()
@_instance_options
def history(instance_id: str, api_url: str, as_json: bool) -> None:
    """Show an instance's event log as a timeline."""

    async def action(client: WarrenClient) -> list[Any]:
        items: list[Any] = []
        after = 0
        while True:
            page = await client.history(instance_id, after_seq=after)
            items.extend(page.items)
            if page.next_after_seq is None:
                return items
            after = page.next_after_seq

    _show(_call(api_url, action), as_json, render.history)


@click.command(name="list")
@click.option("--saga", help="Only this saga.")
@click.option(
    "--status",
    "status_",
    type=click.Choice(["running", "completed", "compensating", "compensated", "failed"]),
    help="Only this status.",
)
@click.option("--correlation-key", help="Only instances started with this key.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--cursor", help="The next_cursor of a previous page.")
@api_url_option
@json_option
def list_instances(
    saga: str | None,
    status_: str | None,
    correlation_key: str | None,
    limit: int,
    cursor: str | None,
    api_url: str,
    as_json: bool,
) -> None:
    """List instances, newest first."""
    page = _call(
        api_url,
        lambda c: c.list(
            saga=saga, status=status_, correlation_key=correlation_key, limit=limit, cursor=cursor
        ),
    )
    _show_page(page, as_json, render.instances, "--cursor", page.next_cursor)


@click.command()
@click.option("--reason", default=None, help="Recorded in the history.")
@_instance_options
def cancel(instance_id: str, reason: str | None, api_url: str, as_json: bool) -> None:
    """Cancel an instance: no new steps, compensate what was done."""
    _show(_call(api_url, lambda c: c.cancel(instance_id, reason)), as_json, render.instance)


@click.command()
@_instance_options
def retry(instance_id: str, api_url: str, as_json: bool) -> None:
    """Retry a failed instance: resume its stuck compensation."""
    _show(_call(api_url, lambda c: c.retry(instance_id)), as_json, render.instance)


@click.command()
@click.argument("name", required=False)
@click.option("--version", type=click.IntRange(1), help="Only this version of NAME.")
@click.option(
    "--graph",
    is_flag=True,
    help="NAME (its latest version, or --version) as a Mermaid flowchart; with --json, the graph.",
)
@api_url_option
@json_option
def definitions(
    name: str | None, version: int | None, graph: bool, api_url: str, as_json: bool
) -> None:
    """List saga definitions, or show every version of NAME (or one, or its graph)."""
    if name is None:
        if version is not None or graph:
            raise click.UsageError("--version and --graph need a saga NAME")
        found = _call(api_url, lambda c: c.definitions())
        _show(found, as_json, lambda listed: render.definitions(listed.items))
    elif graph:
        _show_graph(name, version, api_url, as_json)
    else:
        detail = _call(api_url, lambda c: c.definition(name))
        if version is not None:
            detail = _one_version(detail, version)
        _show(detail, as_json, render.definition)


def _one_version(detail: DefinitionVersions, version: int) -> DefinitionVersions:
    kept = [stored for stored in detail.versions if stored.version == version]
    if not kept:
        raise click.ClickException(f"no version {version} of saga {detail.name!r} is registered")
    return msgspec.structs.replace(detail, versions=kept)


def _show_graph(name: str, version: int | None, api_url: str, as_json: bool) -> None:
    async def action(client: WarrenClient) -> Any:
        pinned = version
        if pinned is None:  # the latest: the last of the versions, which come in order
            pinned = (await client.definition(name)).versions[-1].version
        if as_json:
            return await client.definition_graph(name, pinned)
        return await client.definition_mermaid(name, pinned)

    drawn = _call(api_url, action)
    if as_json:
        render.emit_json(drawn)
    else:
        click.echo(drawn, nl=False)


@click.command()
@api_url_option
@json_option
def pools(api_url: str, as_json: bool) -> None:
    """Worker pools: queue depth, consumers, in flight, recent activity."""
    _show(_call(api_url, lambda c: c.pools()), as_json, lambda found: render.pools(found.items))


@click.group(name="dead-letters")
def dead_letters() -> None:
    """Messages parked in the dead-letter queue: list, show, replay, delete."""


@dead_letters.command(name="list")
@click.option("--kind", type=click.Choice(["command", "reply"]), help="Only this kind.")
@click.option("--instance", "instance_id", help="Only this instance.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--before", "before_id", type=int, help="The next_before_id of a previous page.")
@api_url_option
@json_option
def dead_letters_list(
    kind: str | None,
    instance_id: str | None,
    limit: int,
    before_id: int | None,
    api_url: str,
    as_json: bool,
) -> None:
    """List dead letters, newest first."""
    page = _call(
        api_url,
        lambda c: c.dead_letters(
            kind=kind, instance_id=instance_id, before_id=before_id, limit=limit
        ),
    )
    _show_page(page, as_json, render.dead_letters, "--before", page.next_before_id)


@dead_letters.command(name="show")
@click.argument("letter_id", type=int)
@api_url_option
@json_option
def dead_letters_show(letter_id: int, api_url: str, as_json: bool) -> None:
    """Show one dead letter with its body and headers."""
    _show(_call(api_url, lambda c: c.dead_letter(letter_id)), as_json, render.dead_letter)


@dead_letters.command(name="replay")
@click.argument("letter_id", type=int)
@api_url_option
@json_option
def dead_letters_replay(letter_id: int, api_url: str, as_json: bool) -> None:
    """Publish a dead letter again to where it came from."""
    letter = _call(api_url, lambda c: c.replay_dead_letter(letter_id))
    if as_json:
        render.emit_json(letter)
    else:
        click.echo(f"replayed dead letter {letter.id} to {render.origin(letter)}")


@dead_letters.command(name="delete")
@click.argument("letter_id", type=int)
@api_url_option
def dead_letters_delete(letter_id: int, api_url: str) -> None:
    """Forget a dead letter."""
    _call(api_url, lambda c: c.delete_dead_letter(letter_id))
    click.echo(f"deleted dead letter {letter_id}")


@click.group(name="instances")
def instances_group() -> None:
    """Instances as a whole: verify them against their history."""


@instances_group.command(name="verify")
@click.argument("instance_id", required=False)
@click.option("--all", "every", is_flag=True, help="Every instance, a page at a time.")
@click.option(
    "--page", default=100, show_default=True, type=click.IntRange(1, 200), help="With --all."
)
@api_url_option
@click.option(
    "--json", "as_json", is_flag=True, help="Machine-readable output (--all: one line each)."
)
def verify(instance_id: str | None, every: bool, page: int, api_url: str, as_json: bool) -> None:
    """Replay instance ID's history (or --all instances') through the engine and compare the
    result with the stored snapshot. Exit 7 when one does not match."""
    if (instance_id is None) == (not every):
        raise click.UsageError("give an instance ID or --all (not both)")
    if instance_id is not None:
        found = _call(api_url, lambda c: c.verify(instance_id))
        _show(found, as_json, render.verification)
        counts = {found.outcome: 1}
    else:
        counts = _call(api_url, lambda c: _verify_all(c, page, as_json))
    if counts.get("mismatch"):
        raise click.exceptions.Exit(EXIT_MISMATCH)


async def _verify_all(client: WarrenClient, page: int, as_json: bool) -> dict[str, int]:
    """Every instance's verification: the ones that are not ok shown as they come, then the
    counts (with --json, every one as a JSON line)."""
    counts = {"ok": 0, "unverifiable": 0, "mismatch": 0}
    async for found in client.verify_all(page=page):
        counts[found.outcome] += 1
        if as_json:
            render.emit_json(found)
        elif found.outcome != "ok":
            render.verification(found)
    if not as_json:
        render.verification_counts(counts)
    return counts


def register_commands(group: click.Group) -> None:
    commands: list[click.Command] = [
        start,
        start_many,
        status,
        history,
        list_instances,
        cancel,
        retry,
        definitions,
        pools,
        dead_letters,
        instances_group,
    ]
    for command in commands:
        group.add_command(command)
