"""The wire format: a versioned JSON envelope around every command and reply.

Both sides import this module (and `outgoing`, which builds the messages) and nothing else to
speak to each other, so a worker never needs the engine's logic, only its vocabulary (`Phase`,
`Failure`), which this module speaks.
Decoding is strict: a message that does not fit is a `MessageError` (poison).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
import uuid_utils

from orchestrator.engine.vocabulary import Failure
from orchestrator.engine.vocabulary import Phase as Phase  # re-exported: the wire speaks it
from orchestrator.errors import MessageError

ENVELOPE_VERSION = 1
CONTENT_TYPE = "application/json"


def new_message_id() -> UUID:
    """A UUIDv7: unique, and ordered by creation time."""
    return UUID(bytes=uuid_utils.uuid7().bytes)


def utcnow() -> datetime:
    return datetime.now(UTC)


class CommandPayload(msgspec.Struct, frozen=True, kw_only=True):
    input: Any
    """The saga's input, as started."""
    results: dict[str, Any]
    """Results of the steps completed so far, by step name."""
    idempotency_key: str
    """Stable across attempts and redeliveries of this step's phase."""


class ReplyPayload(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    result: Any = None
    failure: Failure | None = None


class _Envelope(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    v: int = ENVELOPE_VERSION
    id: UUID
    saga: str
    saga_version: int
    instance_id: UUID
    step: str
    phase: Phase
    command: str
    attempt: int
    seq: int
    """Per-instance sequence number of the history event that caused this message."""
    causation_id: UUID | None = None
    correlation_id: UUID
    traceparent: str | None = None
    timestamp: datetime
    payload_version: Annotated[int, msgspec.Meta(ge=1)] = 1
    """The version of the payload's shape, per command name (`orchestrator.messaging.versions`):
    a command's input is upcast to the worker's current version; a reply echoes its command's.
    Absent (1) in messages from before versions existed."""


class Command(_Envelope, frozen=True, kw_only=True, tag="command"):
    """Orchestrator → worker pool: run `command` for one attempt."""

    payload: CommandPayload


class Reply(_Envelope, frozen=True, kw_only=True, tag="reply"):
    """Worker → orchestrator: how the attempt ended."""

    payload: ReplyPayload


Envelope = Command | Reply

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


def encode(message: Envelope) -> bytes:
    return _encoder.encode(message)


class _VersionOnly(msgspec.Struct):
    v: int = ENVELOPE_VERSION


_version_decoder = msgspec.json.Decoder(_VersionOnly)


def decode(body: bytes) -> Envelope:
    """Parse and validate one message; anything malformed is a `MessageError`."""
    try:
        message: Envelope = _decoder.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise MessageError(_why_undecodable(body, exc)) from exc
    if message.v != ENVELOPE_VERSION:
        raise MessageError(_unsupported(message.v))
    return message


def _why_undecodable(body: bytes, exc: msgspec.DecodeError) -> str:
    """Name an unknown envelope version rather than the field it lacks."""
    try:
        version = _version_decoder.decode(body).v
    except msgspec.DecodeError:
        version = ENVELOPE_VERSION
    return _unsupported(version) if version != ENVELOPE_VERSION else f"undecodable message: {exc}"


def _unsupported(version: int) -> str:
    return f"unsupported envelope version {version} (this build speaks {ENVELOPE_VERSION})"
