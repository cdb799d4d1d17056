"""The database edge: engine creation (msgspec for JSON) and driver-error translation."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import msgspec
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from orchestrator import patience
from orchestrator.errors import DatabaseRefused, StorageError
from orchestrator.observability import tracing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

log = logging.getLogger(__name__)

T = TypeVar("T")

_json_encoder = msgspec.json.Encoder()

# serialization_failure, deadlock_detected, admin_shutdown, cannot_connect_now,
# too_many_connections: try again.
_RETRY_SQLSTATES = {"40001", "40P01", "57P01", "57P03", "53300"}
# invalid_authorization_specification (a refused login), invalid_catalog_name (no such
# database): the settings are wrong.
_REFUSED_SQLSTATE_CLASSES = ("28", "3D")


def _json_serializer(value: Any) -> str:
    # msgspec understands Structs, datetimes, UUIDs and enums natively.
    return _json_encoder.encode(value).decode()


def async_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and use asyncpg for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    engine = create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        # No ping before each checkout (it cost a third of the round trips of a step): a
        # connection the server dropped fails on first use as a retryable StorageError, and
        # the pool replaces it (one the driver already knows is closed is refused at checkout,
        # below).
        json_serializer=_json_serializer,
        json_deserializer=msgspec.json.decode,
    )
    _discard_unfinished_transactions(engine)
    return engine


def _discard_unfinished_transactions(engine: AsyncEngine) -> None:
    """Never hand out a connection whose last transaction did not end.

    A task cancelled inside a transaction (aiormq cancels a consumer's task when its channel
    closes) leaves it open: SQLAlchemy's asyncpg adapter only rolls back a transaction whose
    BEGIN answered, and asyncpg still counts one whose answer was cut off. On such a
    connection asyncpg makes every later transaction a savepoint inside the one that never
    ended; their commits only release savepoints, and all of it vanishes with the connection
    (lost in the chaos suite: events recorded and acked, commands of instances that never
    were). So such a connection is closed when it comes back (the server rolls back and frees
    its locks), and never handed out again."""
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def close_if_unfinished(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is None:  # invalidated already
            return
        raw = record.driver_connection
        if not raw.is_closed() and _unfinished(raw):
            # Also seen when a process stops while a background transaction is under way.
            log.warning(
                "closing a database connection left in a transaction by a cancelled task "
                "(nothing of that transaction is committed)"
            )
            raw.terminate()

    @event.listens_for(pool, "checkout")
    def refuse_unfinished(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        raw = record.driver_connection
        if raw.is_closed() or _unfinished(raw):
            # The pool discards it and hands out a fresh connection.
            raise sa_exc.DisconnectionError("connection closed or in an unfinished transaction")


def _unfinished(raw: Any) -> bool:
    """What asyncpg's own pool checks before it reuses a connection."""
    return bool(raw.is_in_transaction() or raw._top_xact is not None)


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction; driver failures leave as `StorageError` (retryable).

    It begins at once, and commits only if the driver's transaction is still the one it
    began: a connection that died under it (the server ended it) could otherwise go unseen,
    because SQLAlchemy's asyncpg adapter forgets a transaction whose connection closed and
    then skips COMMIT without a word, and what was written was not committed. Then nothing
    of it is, and the caller hears a `StorageError` (its message is handled again)."""
    with transaction_span(engine):
        async with translate_errors(), engine.begin() as conn:
            began = await _begin(conn)
            yield conn
            await _still_ours(conn, began)


async def _begin(conn: AsyncConnection) -> object:
    """Send BEGIN now (the first statement would anyway); the driver's transaction."""
    await driver(conn)
    pooled = await conn.get_raw_connection()
    began: object = pooled.dbapi_connection._transaction  # type: ignore[union-attr]
    return began


async def _still_ours(conn: AsyncConnection, began: object) -> None:
    pooled = await conn.get_raw_connection()
    adapted: Any = pooled.dbapi_connection
    raw: Any = pooled.driver_connection
    if adapted._transaction is not began or raw.is_closed():
        await conn.invalidate()
        raise StorageError(
            "database connection lost during the transaction: nothing of it was committed"
        )


async def ping(engine: AsyncEngine) -> None:
    """Whether the database answers (readiness): `StorageError` when it does not."""
    async with transaction(engine) as conn:
        await conn.exec_driver_sql("SELECT 1")


async def patiently(
    step: Callable[[], Awaitable[T]],
    *,
    what: str,
    seconds: float = patience.STARTUP_PATIENCE_SECONDS,
) -> T:
    """Run a start-up `step` that needs the database, trying again while the database is
    unavailable (`StorageError`: down, restarting, "the database system is starting up"), for
    up to `seconds`, as `Broker.connect` waits for RabbitMQ; any other error (a refused login
    or database name among them), or the last one, is raised."""

    def waiting(exc: BaseException) -> None:
        log.warning(
            "%s: the database is not available yet (%s); trying again for up to %g s",
            what,
            exc,
            seconds,
        )

    return await patience.patiently(
        step, worth_waiting=_unavailable, on_first_failure=waiting, seconds=seconds
    )


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, StorageError) and not isinstance(exc, DatabaseRefused)


@contextmanager
def transaction_span(engine: AsyncEngine) -> Iterator[None]:
    """A span for one transaction (database semantic conventions), inside a traced operation
    only: the background polls, which belong to no trace, start none."""
    if not trace.get_current_span().is_recording():
        yield
        return
    url = engine.url
    with tracing.span(
        f"transaction {url.database}",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system.name": "postgresql",
            "db.namespace": url.database or "",
            "db.operation.name": "transaction",
            "server.address": url.host or "",
            "server.port": url.port or 5432,
        },
    ):
        yield


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Turn connection-level driver failures into `StorageError`; others pass unchanged."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        raise StorageError(f"database unavailable: {exc.orig or exc}") from exc
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StorageError(f"database connection lost: {exc.orig or exc}") from exc
        sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
        if sqlstate in _RETRY_SQLSTATES:
            raise StorageError(f"transaction aborted, retry it: {exc.orig}") from exc
        if sqlstate.startswith(_REFUSED_SQLSTATE_CLASSES):
            # What the settings say is refused: waiting will not help, the message must say so.
            reason = str(exc.orig or exc).strip().splitlines()[0]
            raise DatabaseRefused(
                f"cannot use the database: {reason}; check WARREN_DATABASE_URL"
            ) from exc
        raise
    except OSError as exc:
        raise StorageError(f"database unreachable: {exc}") from exc
    # The same for the statements sent on the driver connection directly (see `driver`).
    except (asyncpg.InterfaceError, asyncpg.PostgresConnectionError) as exc:
        raise StorageError(f"database connection lost: {exc}") from exc
    except asyncpg.PostgresError as exc:
        if exc.sqlstate in _RETRY_SQLSTATES:
            raise StorageError(f"transaction aborted, retry it: {exc}") from exc
        raise


async def driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under `conn`, inside its transaction, for the statements on every
    message's path: sent as they are and prepared once per connection. Through SQLAlchemy each
    costs about 0.5 ms of CPU here, twice a commit's round trip (docs/performance.md).

    SQLAlchemy sends BEGIN lazily, with its first statement; when none was sent yet, its
    asyncpg adapter is asked to begin, so that its COMMIT or ROLLBACK covers ours."""
    pooled = await conn.get_raw_connection()
    adapted: Any = pooled.dbapi_connection
    raw: Any = pooled.driver_connection
    try:
        if raw.is_closed():
            raise StorageError("database connection lost: connection is closed")
        if adapted._transaction is None:
            await adapted._start_transaction()
    except Exception as exc:
        # Dead, and SQLAlchemy has not seen it fail: tell the pool, or it would hand this
        # connection out again and again (there is no pre-ping to catch it).
        await conn.invalidate()
        if isinstance(exc, StorageError):
            raise
        raise StorageError(f"database connection lost: {exc}") from exc
    return raw
