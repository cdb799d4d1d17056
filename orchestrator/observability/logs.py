"""Structured logs: one event per line, JSON when stderr is not a terminal.

Each line carries the saga, instance, step, phase and attempt of the message being handled (bound
with `bind` for the length of its handling) and the current trace and span ids, so a log line
leads to its trace. Payloads are logged only when asked (`WARREN_LOG_PAYLOADS`), with the
configured secret fields (`WARREN_LOG_REDACT`) replaced by a marker.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import msgspec
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from orchestrator.config import DEFAULT_REDACT
from orchestrator.observability.tracing import trace_ids

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

REDACTED = "[redacted]"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s%(context)s"

_bound: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "warren_log", default=MappingProxyType({})
)


class _Context(logging.Filter):
    """Adds the bound saga fields and the trace ids to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = dict(_bound.get())
        ids = trace_ids()
        if ids is not None:
            fields["trace_id"], fields["span_id"] = ids
        for key, value in fields.items():
            setattr(record, key, value)
        text = "".join(f" {k}={v}" for k, v in fields.items())
        if hasattr(record, "payload"):  # JSON shows it as a field of its own
            text += f" payload={record.payload}"
        record.context = text
        return True


def configure(level: str, fmt: str = "auto") -> None:
    """Log to stderr as JSON (`fmt="json"`, or "auto" when stderr is not a terminal) or text."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context())
    if as_json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                reserved_attrs=[*RESERVED_ATTRS, "context"],
                json_ensure_ascii=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # alembic: `warren migrate` says what it applied in lines of its own.
    for noisy in ("aiormq", "aio_pika", "httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add `fields` (None values skipped) to every log line written inside the block."""
    token = _bound.set(
        {**_bound.get(), **{k: _plain(v) for k, v in fields.items() if v is not None}}
    )
    try:
        yield
    finally:
        _bound.reset(token)


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) else str(value)


class PayloadLog:
    """Logs message payloads when asked to, with secret fields redacted."""

    def __init__(self, *, enabled: bool, redact: Iterable[str] = DEFAULT_REDACT) -> None:
        self.enabled = enabled
        self.redact = frozenset(field.lower() for field in redact)

    def log(self, logger: logging.Logger, what: str, payload: Any) -> None:
        if self.enabled:
            plain = msgspec.to_builtins(payload)  # Structs, UUIDs, datetimes: JSON types
            logger.info(what, extra={"payload": redact(plain, self.redact)})


def redact(value: Any, fields: frozenset[str]) -> Any:
    """A copy of `value` with the values of keys named in `fields` (any case) replaced."""
    if isinstance(value, dict):
        return {
            k: REDACTED if str(k).lower() in fields else redact(v, fields) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, fields) for v in value]
    return value
