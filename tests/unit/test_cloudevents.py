"""The CloudEvents envelope: binary mode on AMQP, structured mode over HTTP, strict decoding,
and the data schema check."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import EventInvalid, MessageError
from orchestrator.messaging.cloudevents import (
    CloudEvent,
    event_message,
    from_amqp,
    from_structured,
    to_amqp,
    validate,
)
from orchestrator.messaging.event_schemas import check_event_data
from orchestrator.messaging.topology import Topology

TOPOLOGY = Topology(namespace="shop")
AT = datetime(2025, 3, 1, 12, 30, 15, 250_000, tzinfo=UTC)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
maybe_text = st.none() | st.text(min_size=1, max_size=20)
events = st.builds(
    CloudEvent,
    id=st.text(min_size=1, max_size=20),
    source=st.text(min_size=1, max_size=20),
    type=st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True),
    time=st.none()
    | st.datetimes(timezones=st.just(UTC)).map(lambda t: t.replace(microsecond=0))
    | st.just(AT.astimezone(timezone(timedelta(hours=2)))),
    subject=maybe_text,
    dataschema=maybe_text,
    dataversion=st.integers(1, 1000),
    correlationid=maybe_text,
    traceparent=maybe_text,
    data=json_values,
)


def _event(**changes: Any) -> CloudEvent:
    event = CloudEvent(
        id="evt-1",
        source="/payments",
        type="payment.captured",
        time=AT,
        subject="order-7",
        dataversion=2,
        correlationid="0195a0b1-0000-7000-8000-000000000001",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        data={"order_id": "7", "amount": 12},
    )
    return msgspec.structs.replace(event, **changes)


# ---- binary mode -------------------------------------------------------------------------------


def test_binary_mode_puts_the_attributes_in_ce_headers_and_the_data_in_the_body() -> None:
    body, headers = to_amqp(_event())

    assert msgspec.json.decode(body) == {"order_id": "7", "amount": 12}
    assert headers == {
        "ce-id": "evt-1",
        "ce-source": "/payments",
        "ce-type": "payment.captured",
        "ce-specversion": "1.0",
        "ce-time": "2025-03-01T12:30:15.250000Z",
        "ce-subject": "order-7",
        "ce-dataversion": "2",
        "ce-correlationid": "0195a0b1-0000-7000-8000-000000000001",
        "ce-traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "content-type": "application/json",
    }


def test_absent_attributes_are_absent_headers() -> None:
    _, headers = to_amqp(CloudEvent(id="1", source="/s", type="thing.happened"))

    assert sorted(headers) == [
        "ce-dataversion",
        "ce-id",
        "ce-source",
        "ce-specversion",
        "ce-type",
        "content-type",
    ]


@given(event=events)
def test_binary_mode_round_trips(event: CloudEvent) -> None:
    body, headers = to_amqp(event)
    content_type = headers.pop("content-type")

    assert from_amqp(body, headers, content_type) == event


def test_headers_as_the_driver_may_hand_them_over_are_read() -> None:
    """Bytes for text and an integer dataversion, as other AMQP clients send them."""
    body, headers = to_amqp(_event())
    raw: dict[str, Any] = {k: v.encode() for k, v in headers.items()}
    raw["ce-dataversion"] = 2

    assert from_amqp(body, raw, None) == _event()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda h: h.pop("ce-id"), "the ce-id header is missing"),
        (lambda h: h.update({"ce-id": ""}), "the ce-id header is missing"),
        (lambda h: h.pop("ce-source"), "the ce-source header is missing"),
        (lambda h: h.pop("ce-type"), "the ce-type header is missing"),
        (lambda h: h.pop("ce-specversion"), "ce-specversion header is missing"),
        (lambda h: h.update({"ce-specversion": "0.3"}), "specversion '0.3' is not supported"),
        (lambda h: h.update({"ce-type": "Payment Captured"}), "does not look like an event type"),
        (lambda h: h.update({"ce-time": "yesterday"}), "is not an RFC 3339 timestamp"),
        (lambda h: h.update({"ce-time": "2025-03-01T12:00:00"}), "has no UTC offset"),
        (lambda h: h.update({"ce-dataversion": "two"}), "ce-dataversion 'two' is not a positive"),
        (lambda h: h.update({"ce-dataversion": "0"}), "ce-dataversion '0' is not a positive"),
        (lambda h: h.update({"ce-subject": 1.5}), "the ce-subject header is not text"),
    ],
)
def test_a_malformed_event_message_is_poison_with_its_reason(change: Any, reason: str) -> None:
    body, headers = to_amqp(_event())
    change(headers)

    with pytest.raises(MessageError, match="not a CloudEvent") as caught:
        from_amqp(body, headers, "application/json")

    assert reason in str(caught.value)


def test_undecodable_data_is_poison() -> None:
    _, headers = to_amqp(_event())

    with pytest.raises(MessageError, match="the body is not JSON"):
        from_amqp(b"{not json", headers, "application/json")


def test_data_that_is_not_json_is_poison() -> None:
    body, headers = to_amqp(_event())

    with pytest.raises(MessageError, match="content type 'text/plain' is not supported"):
        from_amqp(body, headers, "text/plain")


def test_json_media_types_are_read_and_an_empty_body_is_no_data() -> None:
    _, headers = to_amqp(_event())

    with_suffix = from_amqp(b"[1]", headers, "application/vnd.shop+json; charset=utf-8")
    empty = from_amqp(b"", headers, None)

    assert (with_suffix.data, with_suffix.datacontenttype) == (
        [1],
        "application/vnd.shop+json; charset=utf-8",
    )
    assert (empty.data, empty.datacontenttype) == (None, "application/json")


def test_the_outbox_message_goes_to_the_events_exchange_under_the_type() -> None:
    event = _event()

    message = event_message(event, TOPOLOGY)

    assert (message.exchange, message.routing_key) == ("shop.events", "payment.captured")
    assert message.body == to_amqp(event)[0]
    assert message.headers["ce-id"] == "evt-1"
    assert message.headers["traceparent"] == event.traceparent  # the relay's span continues it


def test_copies_of_one_event_are_one_message_and_other_events_are_others() -> None:
    same = event_message(_event(), TOPOLOGY).message_id
    again = event_message(_event(data={"changed": True}), TOPOLOGY).message_id
    other_id = event_message(_event(id="evt-2"), TOPOLOGY).message_id
    other_source = event_message(_event(source="/billing"), TOPOLOGY).message_id

    assert isinstance(same, uuid.UUID)
    assert same == again
    assert len({same, other_id, other_source}) == 3


# ---- structured mode ---------------------------------------------------------------------------


@given(event=events)
def test_structured_mode_round_trips(event: CloudEvent) -> None:
    assert from_structured(msgspec.json.encode(event)) == event


def test_structured_mode_reads_a_plain_cloudevents_body() -> None:
    body = b"""{"specversion": "1.0", "id": "A-1", "source": "/shop", "type": "order.placed",
        "time": "2025-03-01T12:30:15Z", "dataversion": 3, "someextension": "ignored",
        "data": {"order_id": "7"}}"""

    event = from_structured(body)

    assert (event.id, event.source, event.type, event.dataversion) == (
        "A-1",
        "/shop",
        "order.placed",
        3,
    )
    assert event.time == datetime(2025, 3, 1, 12, 30, 15, tzinfo=UTC)
    assert event.data == {"order_id": "7"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "malformed"),
        (b"[]", "Expected `object`, got `array`"),
        (b'{"source": "/s", "type": "a.b"}', "missing required field `id`"),
        (b'{"id": 5, "source": "/s", "type": "a.b"}', "Expected `str`, got `int` - at `$.id`"),
        (b'{"id": "1", "source": "", "type": "a.b"}', "source is empty"),
        (b'{"id": "1", "source": "/s", "type": "A B"}', "does not look like an event type"),
        (b'{"id": "1", "source": "/s", "type": "a.b", "specversion": "0.3"}', "specversion"),
        (b'{"id": "1", "source": "/s", "type": "a.b", "time": "soon"}', "$.time"),
        (b'{"id": "1", "source": "/s", "type": "a.b", "time": "2025-01-01T00:00:00"}', "offset"),
        (b'{"id": "1", "source": "/s", "type": "a.b", "dataversion": 0}', "dataversion 0"),
        (
            b'{"id": "1", "source": "/s", "type": "a.b", "datacontenttype": "text/xml"}',
            "datacontenttype 'text/xml' is not supported",
        ),
        (
            b'{"id": "1", "source": "/s", "type": "a.b", "data_base64": "AAAA"}',
            "data_base64 is not supported",
        ),
    ],
)
def test_a_malformed_structured_event_is_invalid_with_its_reason(body: bytes, reason: str) -> None:
    with pytest.raises(EventInvalid, match="not a CloudEvent") as caught:
        from_structured(body)

    assert reason in caught.value.message


def test_an_event_made_in_code_is_checked_before_it_is_sent() -> None:
    assert validate(_event()) == _event()
    with pytest.raises(EventInvalid, match="invalid event: type 'Order Placed'"):
        validate(_event(type="Order Placed"))


# ---- data schemas ------------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "required": ["order_id", "amount"],
    "properties": {
        "order_id": {"type": "string"},
        "amount": {"type": "integer", "minimum": 1},
        "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}},
    },
    "$defs": {"line": {"type": "object", "required": ["sku"]}},
}


def test_data_that_satisfies_every_schema_passes() -> None:
    check_event_data([SCHEMA, {"type": "object"}], _event(data={"order_id": "7", "amount": 3}))
    check_event_data([], _event(data="anything"))


def test_data_that_does_not_match_names_the_type_and_each_failing_path() -> None:
    event = _event(data={"order_id": 7, "amount": 0, "lines": [{"sku": "a"}, {}]})

    with pytest.raises(EventInvalid) as caught:
        check_event_data([SCHEMA], event)

    assert caught.value.errors == [
        "amount: 0 is less than the minimum of 1",
        "lines/1: 'sku' is a required property",
        "order_id: 7 is not of type 'string'",
    ]
    assert caught.value.message.startswith(
        "event 'payment.captured' (id 'evt-1') does not match the schema declared for its type: "
        "amount: 0 is less than the minimum of 1; "
    )


def test_a_missing_field_is_named_at_the_root() -> None:
    with pytest.raises(EventInvalid, match=r"\(root\): 'amount' is a required property"):
        check_event_data([SCHEMA], _event(data={"order_id": "7"}))


def test_remote_references_are_never_fetched() -> None:
    schema = {"$ref": "https://example.com/schemas/order.json"}

    with pytest.raises(EventInvalid, match="a reference does not resolve"):
        check_event_data([schema], _event())
