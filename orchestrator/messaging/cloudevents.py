"""Domain events as CloudEvents 1.0: the envelope, and its two encodings.

On AMQP, binary mode: the attributes travel as `ce-` headers (`ce-id`, `ce-type`, ...), the
body is the event's data as JSON and the message's content type says so. Any CloudEvents
consumer reads it; a plain consumer reads the data without knowing the envelope. Over HTTP,
structured mode: one JSON object (`application/cloudevents+json`) with the attributes and `data`.

Two extension attributes: `dataversion` (the version of `data`'s shape, for the upcasters of
`orchestrator.messaging.versions`) and `correlationid` (the Warren instance that emitted the
event, if any); `traceparent` is the CloudEvents distributed-tracing extension.
Decoding is strict: an AMQP message that does not fit is a `MessageError` (dead-lettered with
its reason), an HTTP body that does not fit an `EventInvalid` (422).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from orchestrator.errors import EventInvalid, MessageError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from orchestrator.messaging.topology import Topology
    from orchestrator.persistence.outbox import OutboxMessage

SPECVERSION = "1.0"
JSON = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_.-]{0,127}")
"""What an event type looks like (whole string), e.g. ``payment.captured``: it is the routing
key on the topic exchange, where dots separate words."""
PREFIX = "ce-"

# Event message ids are derived from (source, id), which identify an event in CloudEvents: two
# copies of one event are one message to the inboxes that drop duplicates.
_EVENT_IDS = uuid.UUID("6b1d7c1e-52a4-4c43-9d0f-2f0b8f5e7a10")


class CloudEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One domain event: the CloudEvents 1.0 context attributes, Warren's extensions, data."""

    id: str
    """Unique within `source`: a consumer drops a second event with the same (source, id)."""
    source: str
    """Who emitted it, a URI reference: ``warren/saga/order``, ``/payments``..."""
    type: str
    """What happened, e.g. ``payment.captured``: the routing key on the events exchange."""
    specversion: str = SPECVERSION
    time: datetime | None = None
    subject: str | None = None
    datacontenttype: str = JSON
    dataschema: str | None = None
    dataversion: int = 1
    """Extension: the version of `data`'s shape (upcasters turn older shapes into the current)."""
    correlationid: str | None = None
    """Extension: the Warren instance that emitted it, if any."""
    traceparent: str | None = None
    """Extension (distributed tracing): the W3C trace context where the event was made."""
    data: Any = None


# The optional attributes sent as headers, in the order a reader would look for them.
_OPTIONAL = ("subject", "dataschema", "correlationid", "traceparent")

_encoder = msgspec.json.Encoder()
_data_decoder = msgspec.json.Decoder()


class _Structured(CloudEvent, frozen=True, kw_only=True):
    """A structured-mode body; other extension attributes are ignored."""

    data_base64: str | None = None
    """Binary data: refused, Warren's events carry JSON."""


_structured_decoder = msgspec.json.Decoder(_Structured)


# ---- AMQP, binary mode ---------------------------------------------------------------------------


def to_amqp(event: CloudEvent) -> tuple[bytes, dict[str, Any]]:
    """The message body (the data as JSON) and headers (`ce-` attributes, `content-type`)."""
    headers: dict[str, Any] = {
        "ce-id": event.id,
        "ce-source": event.source,
        "ce-type": event.type,
        "ce-specversion": event.specversion,
        "ce-dataversion": str(event.dataversion),
    }
    if event.time is not None:
        headers["ce-time"] = _rfc3339(event.time)
    for name in _OPTIONAL:
        value = getattr(event, name)
        if value is not None:
            headers[PREFIX + name] = value
    headers["content-type"] = event.datacontenttype
    return _encoder.encode(event.data), headers


def from_amqp(body: bytes, headers: Mapping[str, Any], content_type: str | None) -> CloudEvent:
    """The event a binary-mode message carries; a `MessageError` naming what is missing or wrong
    (the message is poison: dead-lettered with that reason)."""
    try:
        return _from_amqp(body, headers, content_type)
    except _Malformed as exc:
        raise MessageError(f"not a CloudEvent: {exc}") from exc


def event_message(event: CloudEvent, topology: Topology) -> OutboxMessage:
    """`event` addressed to the events exchange (a topic exchange), routed by its type; ready
    for the outbox. The message id is derived from (source, id): copies are one message."""
    # Imported here: the envelope itself loads no database code (`from workers import *`).
    from orchestrator.persistence.outbox import OutboxMessage

    body, headers = to_amqp(event)
    if event.traceparent is not None:
        headers["traceparent"] = event.traceparent  # the relay's publish span continues it
    return OutboxMessage(
        message_id=uuid.uuid5(_EVENT_IDS, f"{event.source}\n{event.id}"),
        exchange=topology.events_exchange,
        routing_key=event.type,
        body=body,
        headers=headers,
    )


# ---- HTTP, structured mode -----------------------------------------------------------------------


def from_structured(body: bytes) -> CloudEvent:
    """The event of a structured-mode body (`application/cloudevents+json`): one JSON object
    with the attributes and `data`. `EventInvalid` says what is wrong."""
    try:
        received = _structured_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise EventInvalid(f"not a CloudEvent: {exc}") from exc
    if received.data_base64 is not None:
        raise EventInvalid(
            "not a CloudEvent Warren reads: data_base64 is not supported, send JSON in `data`"
        )
    fields = msgspec.structs.asdict(received)
    del fields["data_base64"]
    event = CloudEvent(**fields)
    try:
        _check(event)
    except _Malformed as exc:
        raise EventInvalid(f"not a CloudEvent: {exc}") from exc
    return event


def validate(event: CloudEvent) -> CloudEvent:
    """`event` when it is one Warren can send; `EventInvalid` naming the attribute otherwise
    (for events made in code, before they are written to an outbox)."""
    try:
        _check(event)
    except _Malformed as exc:
        raise EventInvalid(f"invalid event: {exc}") from exc
    return event


class _Malformed(ValueError):
    """What is wrong with an event; each decoder raises it as its own error."""


def _check(event: CloudEvent) -> None:
    """`_Malformed` (a `ValueError`) unless the attributes are ones Warren accepts."""
    if event.specversion != SPECVERSION:
        raise _Malformed(
            f"specversion {event.specversion!r} is not supported (Warren reads {SPECVERSION!r})"
        )
    if not event.id:
        raise _Malformed("id is empty")
    if not event.source:
        raise _Malformed("source is empty")
    if not EVENT_TYPE.fullmatch(event.type):
        raise _Malformed(
            f"type {event.type!r} does not look like an event type: lowercase words separated "
            "by dots, e.g. 'payment.captured' (at most 128 characters)"
        )
    if event.time is not None and event.time.tzinfo is None:
        raise _Malformed("time has no UTC offset (RFC 3339 wants one, e.g. Z)")
    if event.dataversion < 1:
        raise _Malformed(f"dataversion {event.dataversion} is not a positive integer")
    if not _is_json(event.datacontenttype):
        raise _Malformed(
            f"datacontenttype {event.datacontenttype!r} is not supported: Warren's events "
            "carry JSON data (application/json)"
        )


def _from_amqp(body: bytes, headers: Mapping[str, Any], content_type: str | None) -> CloudEvent:
    attributes = {
        k.lower(): _text(k, v) for k, v in headers.items() if k.lower().startswith(PREFIX)
    }
    specversion = attributes.get("ce-specversion")
    if specversion is None:
        raise _Malformed("the ce-specversion header is missing (is it a CloudEvent?)")
    for required in ("ce-id", "ce-source", "ce-type"):
        if not attributes.get(required):
            raise _Malformed(f"the {required} header is missing")
    content_type = content_type or _text("content-type", headers.get("content-type")) or JSON
    event = CloudEvent(
        id=attributes["ce-id"],
        source=attributes["ce-source"],
        type=attributes["ce-type"],
        specversion=specversion,
        time=_time(attributes.get("ce-time")),
        subject=attributes.get("ce-subject"),
        datacontenttype=content_type,
        dataschema=attributes.get("ce-dataschema"),
        dataversion=_version(attributes.get("ce-dataversion")),
        correlationid=attributes.get("ce-correlationid"),
        traceparent=attributes.get("ce-traceparent"),
        data=_data(body, content_type),
    )
    _check(event)
    return event


def _text(name: str, value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError as exc:
            raise _Malformed(f"the {name} header is not UTF-8 text") from exc
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    if value is None:
        return ""
    raise _Malformed(f"the {name} header is not text but {type(value).__name__}")


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _Malformed(f"ce-time {value!r} is not an RFC 3339 timestamp") from exc
    if moment.tzinfo is None:
        raise _Malformed(f"ce-time {value!r} has no UTC offset (RFC 3339 wants one, e.g. Z)")
    return moment


def _version(value: str | None) -> int:
    if value is None:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise _Malformed(f"ce-dataversion {value!r} is not a positive integer")
    return int(value)


def _data(body: bytes, content_type: str) -> Any:
    if not _is_json(content_type):
        raise _Malformed(
            f"content type {content_type!r} is not supported: Warren reads JSON event data"
        )
    if not body:
        return None  # an event without data
    try:
        return _data_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise _Malformed(f"the body is not JSON: {exc}") from exc


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON or (media.startswith("application/") and media.endswith("+json"))


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat().replace("+00:00", "Z")
