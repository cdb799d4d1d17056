"""The database edge: engine creation (msgspec for JSON) and driver-error translation."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from orchestrator.errors import StorageError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

_json_encoder = msgspec.json.Encoder()

# serialization_failure, deadlock_detected, admin_shutdown, cannot_connect_now: try again.
_RETRY_SQLSTATES = {"40001", "40P01", "57P01", "57P03"}


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
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        json_serializer=_json_serializer,
        json_deserializer=msgspec.json.decode,
    )


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction; driver failures leave as `StorageError` (retryable)."""
    async with translate_errors(), engine.begin() as conn:
        yield conn


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
        if getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES:
            raise StorageError(f"transaction aborted, retry it: {exc.orig}") from exc
        raise
    except OSError as exc:
        raise StorageError(f"database unreachable: {exc}") from exc
