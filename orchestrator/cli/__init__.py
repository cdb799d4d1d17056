"""`warren`: one entry point for every process and for registering definitions.

Errors reach the user as one line saying what to do, with exit code 1 (2 for usage errors),
never as a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

import click

from orchestrator.config import Settings
from orchestrator.errors import WarrenError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from workers import Worker

log = logging.getLogger("warren")

DEFAULT_EXAMPLE_APP = "examples.orders.workers:worker"
DEFAULT_EXAMPLE_SAGAS = "examples.orders.saga:order_saga"
ORCHESTRATOR_METRICS_PORT = 9464
WORKER_METRICS_PORT = 9465


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except WarrenError as exc:
        raise click.ClickException(exc.message) from exc


def _serve(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stopping)`: the first SIGTERM/SIGINT sets `stopping` (drain gracefully), a
    second one exits at once (uncommitted work rolls back, unacked messages are redelivered)."""

    async def runner() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stopping.is_set():
                log.warning("second signal: exiting now")
                os._exit(1)
            log.info("signal received: draining (send it again to exit at once)")
            stopping.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await main(stopping)

    import uvloop  # a faster event loop: the loop itself was a fifth of each process's CPU

    from orchestrator.observability import tracing

    try:
        with _user_errors():
            uvloop.run(runner())
    finally:
        tracing.shutdown()  # export the spans still queued


def _observe(settings: Settings, service: str, default_port: int | None) -> None:
    """Traces as the OTEL_* variables say; Prometheus metrics on their own port (None: none).

    With no WARREN_METRICS_PORT, a process whose default port is taken (a second worker on the
    host) takes a free one; the log line says which. A port set on purpose is never replaced."""
    from orchestrator.observability import metrics, tracing

    with _user_errors():
        tracing.configure(f"warren-{service}")
    configured = settings.metrics_port
    port = configured if configured is not None else default_port
    if not port:
        return
    host = settings.metrics_host
    try:
        try:
            bound = metrics.serve(port, host)
        except OSError:
            if configured is not None:
                raise
            bound = metrics.serve(0, host)
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve metrics on {host}:{port} ({exc.strerror}); set WARREN_METRICS_PORT "
            "to a free port, or to 0 for no metrics endpoint (and WARREN_METRICS_HOST to an "
            "address of this host)"
        ) from exc
    log.info("metrics on http://%s:%d/metrics", host, bound)


def _settings() -> Settings:
    with _user_errors():
        return Settings.from_env()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    envvar="WARREN_LOG_LEVEL",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-format",
    default="auto",
    show_default=True,
    envvar="WARREN_LOG_FORMAT",
    type=click.Choice(["auto", "json", "text"], case_sensitive=False),
    help="auto: JSON lines unless stderr is a terminal.",
)
def main(log_level: str, log_format: str) -> None:
    """Warren: saga orchestration on RabbitMQ and Postgres.

    Configure with WARREN_DATABASE_URL, WARREN_AMQP_URL, WARREN_NAMESPACE (see docs/)."""
    from orchestrator.observability import logs

    logs.configure(log_level, log_format.lower())
    # MODULE:ATTR arguments name the user's modules, usually in the folder `warren` is run
    # from: import them from there, as uvicorn, celery and gunicorn do.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


@main.command()
def migrate() -> None:
    """Create or upgrade Warren's tables (alembic upgrade head).

    Prints one line per migration applied, or that the schema is already the latest."""
    from orchestrator.storage.migrate import head, upgrade

    settings = _settings()
    with _user_errors():
        applied = upgrade(settings.database_url)
    for migration in applied:
        click.echo(f"applied {migration.revision}: {migration.description}")
    if not applied:
        click.echo(f"already at the latest schema ({head()})")


@main.command()
@click.argument("target")
@click.option(
    "--app",
    "app_ref",
    help="A Worker (MODULE:ATTR) to check: warn about the sagas' commands it has no handler for.",
)
def register(target: str, app_ref: str | None) -> None:
    """Store the saga definition(s) named by MODULE:ATTR (a Saga or a list of Sagas)."""
    from orchestrator.service.registry import import_sagas, register_saga
    from orchestrator.storage.database import create_engine
    from workers.check import check, missing_message

    settings = _settings()
    with _user_errors():
        sagas = import_sagas(target)
        app = _load_worker(app_ref) if app_ref else None

    async def run() -> None:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            for saga in sagas:
                outcome = await register_saga(engine, saga)
                click.echo(
                    f"{saga.name} v{saga.version}: {outcome.value} ({saga.content_hash[:12]})"
                )
        finally:
            await engine.dispose()

    with _user_errors():
        asyncio.run(run())
    if app is not None:  # registered all the same: workers may be deployed after this
        for found in check(sagas, app).missing:
            click.echo(f"warning: {missing_message(found, app.name)}", err=True)


@main.command()
@click.option("--host", default=None, help="Interface to bind (WARREN_API_HOST).")
@click.option("--port", type=int, default=None, help="Port (WARREN_API_PORT).")
def api(host: str | None, port: int | None) -> None:
    """Serve the HTTP API."""
    settings = _settings()
    _observe(settings, "api", None)  # the API serves /metrics on its own port

    async def run(stopping: asyncio.Event) -> None:
        await _check_broker(settings)
        await _serve_api(settings, host or settings.api_host, port or settings.api_port, stopping)

    _serve(run)


@main.command()
def orchestrator() -> None:
    """Consume replies, advance instances, fire timers and relay the outbox."""
    from orchestrator.service.orchestrator import Orchestrator

    settings = _settings()
    _observe(settings, "orchestrator", ORCHESTRATOR_METRICS_PORT)
    _serve(Orchestrator(settings).run)


@main.command()
@click.option("--app", "app_ref", required=True, help="The Worker object, as MODULE:ATTR.")
@click.option(
    "--pool", "pools", multiple=True, help="Pool(s) to serve; all of the app's by default."
)
@click.option(
    "--concurrency",
    default=None,
    type=click.IntRange(1, 1000),
    help="Transactions at once per pool; each takes the commands that arrived meanwhile, up "
    "to WARREN_BATCH_SIZE. Default: 2 for a pool whose commands are batched, 8 for one "
    "handled one command at a time (a non-transactional handler, or WARREN_BATCH_SIZE=1).",
)
def worker(app_ref: str, pools: tuple[str, ...], concurrency: int | None) -> None:
    """Run a worker for one or more pools."""
    from workers.runtime import WorkerRunner

    settings = _settings()
    with _user_errors():
        runner = WorkerRunner(
            _load_worker(app_ref), settings, pools=list(pools) or None, concurrency=concurrency
        )
    _observe(settings, "worker", WORKER_METRICS_PORT)
    _serve(runner.run)


@main.command()
@click.option(
    "--app",
    "app_ref",
    default=DEFAULT_EXAMPLE_APP,
    show_default=True,
    help="Worker app to run in-process.",
)
@click.option(
    "--sagas",
    "saga_ref",
    default=DEFAULT_EXAMPLE_SAGAS,
    show_default=True,
    help="Saga definition(s) to register at start.",
)
@click.option("--port", type=int, default=None, help="API port (WARREN_API_PORT).")
def dev(app_ref: str, saga_ref: str, port: int | None) -> None:
    """Everything in one process for a laptop: migrate, register, api, orchestrator, workers."""
    from orchestrator.service.orchestrator import Orchestrator
    from orchestrator.service.registry import import_sagas, register_saga
    from orchestrator.storage.database import create_engine
    from orchestrator.storage.migrate import upgrade
    from workers.check import check, log_report
    from workers.runtime import WorkerRunner

    settings = _settings()
    with _user_errors():
        sagas = import_sagas(saga_ref)
        app = _load_worker(app_ref)
        # One process runs every pool: check the sagas against the whole app, once, here.
        runner = WorkerRunner(app, settings, check_definitions=False)
        upgrade(settings.database_url)
    _observe(settings, "dev", None)  # one process: the API's /metrics shows everything

    async def run(stopping: asyncio.Event) -> None:
        await _check_broker(settings)
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            for saga in sagas:
                await register_saga(engine, saga)
        finally:
            await engine.dispose()
        log_report(check(sagas, app), log)
        await asyncio.gather(
            Orchestrator(settings).run(stopping),
            runner.run(stopping),
            _serve_api(settings, settings.api_host, port or settings.api_port, stopping),
        )

    _serve(run)


def _load_worker(reference: str) -> Worker:
    import workers
    from orchestrator.service.registry import ImportTargetError, import_object

    target = import_object(reference)
    if not isinstance(target, workers.Worker):
        raise ImportTargetError(f"{reference} is not a workers.Worker")
    return target


async def _check_broker(settings: Settings) -> None:
    """Connect once before the API starts: a broker that refuses it then stops the process
    with one line, where a failure inside the app's lifespan is a traceback from uvicorn."""
    from orchestrator.messaging.broker import Broker

    broker = Broker(settings.amqp_url, settings.topology)
    try:
        await broker.connect()
    finally:
        await broker.close()


async def _serve_api(settings: Settings, host: str, port: int, stopping: asyncio.Event) -> None:
    import uvicorn

    from orchestrator.api.app import create_app

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # signals are ours (see _serve): stop through `stopping`

    server = _Server(
        uvicorn.Config(
            create_app(settings), host=host, port=port, log_level="warning", lifespan="on"
        )
    )

    async def stop_when_asked() -> None:
        await stopping.wait()
        server.should_exit = True

    stopper = asyncio.create_task(stop_when_asked())
    try:
        await server.serve()
        if not server.started:
            raise WarrenError(
                f"the API could not start on {host}:{port} (port in use? see the log)"
            )
    finally:
        stopper.cancel()
    stopping.set()


# The commands that operate sagas through the HTTP API.
from orchestrator.cli import events as _events  # noqa: E402
from orchestrator.cli import operate as _operate  # noqa: E402
from orchestrator.cli.check import check as _check  # noqa: E402
from orchestrator.cli.simulate import simulate as _simulate  # noqa: E402

_operate.register_commands(main)
_events.register_commands(main)
main.add_command(_check)
main.add_command(_simulate)
