"""Events through the real processes: triggers, waits, signals, published events, upcasters,
schemas and future versions, on real RabbitMQ, Postgres and HTTP."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any
from uuid import UUID

import aio_pika
import pytest

from orchestrator.messaging.cloudevents import CloudEvent, to_amqp
from orchestrator.service.events import triggered_instance_id
from orchestrator.service.registry import register_saga
from tests.apps.sagas import approved, paid, paid_briefly
from tests.support import services
from tests.support.processes import run_warren
from tests.support.publish import publish
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from tests.conftest import Stack

pytestmark = pytest.mark.e2e


async def _up(stack: Stack, *sagas: Any) -> None:
    for saga in sagas:
        await register_saga(stack.probe.engine, saga)
    await stack.api()
    await stack.orchestrators()
    worker = stack.processes.worker("tests.apps.fast:worker", "fast")
    await stack.probe.wait_consumers(stack.topology.pool_queue("fast"), alive=worker.alive)


async def _types(stack: Stack, instance_id: str | UUID, step: str | None = None) -> list[str]:
    history = await stack.probe.history(str(instance_id))
    return [h["type"] for h in history if step is None or h["step"] == step]


def _captured(order_id: str, amount: float = 30, *, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or str(uuid.uuid4()),
        "source": "payments",
        "type": "payment.captured",
        "data": {"order_id": order_id, "amount": amount},
    }


async def _post_event(stack: Stack, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = await stack.http.post("/v1/events", json=body)
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _waiting(stack: Stack, instance_id: str, wait: str = "payment") -> None:
    async def began() -> bool:
        return "wait_started" in await _types(stack, instance_id, wait)

    await wait_for(began, timeout=60, what=f"the instance to reach its wait {wait!r}")


async def _received(stack: Stack, instance_id: str, wait: str) -> Any:
    """What the wait `wait` received, as the instance view shows it."""
    view = (await stack.http.get(f"/v1/instances/{instance_id}")).json()
    node = next(n for n in view["nodes"] if n["key"] == wait)
    assert node["kind"] == "wait"
    return node["received"]


def _vhost(stack: Stack) -> str:
    return stack.probe.settings.amqp_url.rsplit("/", 1)[1]


async def _drained(stack: Stack, queue: str) -> None:
    """Every message of `queue` delivered and acked (ready and unacked both 0)."""

    async def empty() -> bool:
        out = await asyncio.to_thread(
            services.TEST_SERVERS.rabbitmqctl,
            "list_queues",
            "-p",
            _vhost(stack),
            "name",
            "messages",
        )
        counts = dict(line.split("\t") for line in out.splitlines() if "\t" in line)
        return counts.get(queue) == "0"

    await wait_for(empty, timeout=60, what=f"{queue} to be drained")


async def test_an_event_delivered_three_times_starts_one_instance(stack: Stack) -> None:
    await _up(stack, paid)
    event = CloudEvent(
        id="order-7-placed", source="shop", type="order.placed", data={"order_id": "O-7"}
    )
    body, headers = to_amqp(event)
    copies = [
        aio_pika.Message(body, headers=headers, content_type="application/json") for _ in range(3)
    ]
    await publish(
        stack.probe.settings.amqp_url, stack.topology.events_exchange, "order.placed", *copies
    )

    instance_id = triggered_instance_id("paid", event)

    async def started() -> str | None:
        return await stack.probe.status(instance_id)

    await wait_for(started, timeout=60, what="the triggered instance")
    await _drained(stack, stack.topology.events_queue)
    rows = await stack.probe.count("warren.instances")
    assert rows == 1
    instance = (await stack.http.get(f"/v1/instances/{instance_id}")).json()
    assert instance["input"] == {"order_id": "O-7"}
    listed = (await stack.http.get("/v1/instances", params={"correlation_key": "O-7"})).json()
    assert [i["id"] for i in listed["items"]] == [str(instance_id)]
    received = (await stack.http.get("/v1/events", params={"type": "order.placed"})).json()
    assert [(e["id"], e["started"], e["via"]) for e in received["items"]] == [
        ("order-7-placed", 1, "broker")
    ]


async def test_a_wait_takes_an_event_sent_before_during_and_after(stack: Stack) -> None:
    await _up(stack, paid)
    # before: the event comes first, and is kept until the wait begins
    early = await _post_event(stack, _captured("E-1", 10))
    assert early["started"] == []
    assert early["reached"] == []
    before = await stack.start({"order_id": "E-1"}, saga="paid")
    # during: sent while the instance runs its first step, which it may or may not have
    # finished: taken either way
    during = await stack.start({"order_id": "E-2"}, saga="paid")
    await _post_event(stack, _captured("E-2", 20))
    # after: the instance waits already
    after = await stack.start({"order_id": "E-3"}, saga="paid")
    await _waiting(stack, after)
    late = await _post_event(stack, _captured("E-3", 30))
    assert late["reached"] == [{"instance_id": after, "wait": "payment"}]

    for instance_id, amount in ((before, 10), (during, 20), (after, 30)):
        assert await stack.probe.wait_terminal(instance_id) == "completed"
        assert (await _received(stack, instance_id, "payment"))["data"]["amount"] == amount
        assert (await _types(stack, instance_id)).count("event_received") == 1
    unmatched = (await stack.http.get("/v1/events", params={"unmatched": "true"})).json()
    assert unmatched["items"] == []  # every event reached its instance


async def test_a_wait_that_times_out_compensates(stack: Stack) -> None:
    await _up(stack, paid_briefly)
    instance_id = await stack.start({"order_id": "T-1"}, saga="paid-briefly")
    assert await stack.probe.wait_terminal(instance_id) == "compensated"
    types = await _types(stack, instance_id)
    assert "wait_timed_out" in types
    assert (await _types(stack, instance_id, "take")).count("compensation_succeeded") == 1
    late = await _post_event(stack, _captured("T-1"))
    assert late["reached"] == []  # the wait is over: the event is kept, unmatched


async def test_an_event_matching_no_instance_is_recorded(stack: Stack) -> None:
    await _up(stack, paid)
    answer = await _post_event(stack, _captured("nobody"))
    listed = (await stack.http.get("/v1/events", params={"unmatched": "true"})).json()
    assert [e["seq"] for e in listed["items"]] == [answer["seq"]]
    shown = (await stack.http.get(f"/v1/events/{answer['seq']}")).json()
    assert shown["data"] == {"order_id": "nobody", "amount": 30}
    again = await _post_event(stack, _captured("nobody", event_id=answer["id"]), status=200)
    assert again["duplicate"] is True


async def test_an_event_that_breaks_its_schema_is_refused_and_dead_lettered(stack: Stack) -> None:
    await _up(stack, paid)
    bad = _captured("S-1")
    bad["data"] = {"order_id": "S-1"}  # no amount
    response = await stack.http.post("/v1/events", json=bad)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "urn:warren:problem:event-invalid"
    assert "amount" in problem["detail"] + json.dumps(problem.get("errors"))

    event = CloudEvent(id="bad-1", source="payments", type="payment.captured", data={"x": 1})
    body, headers = to_amqp(event)
    message = aio_pika.Message(body, headers=headers, content_type="application/json")
    await publish(
        stack.probe.settings.amqp_url, stack.topology.events_exchange, event.type, message
    )

    async def parked() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await stack.http.get("/v1/dead-letters")).json()["items"]
        return items

    letters = await wait_for(parked, timeout=60, what="the bad event to be dead-lettered")
    assert "amount" in letters[0]["reason"]


async def test_an_event_of_an_unknown_future_version_is_dead_lettered(stack: Stack) -> None:
    await _up(stack, paid)
    event = CloudEvent(
        id="future-1",
        source="payments",
        type="payment.captured",
        dataversion=7,
        data={"order_id": "F-1", "amount": 1},
    )
    body, headers = to_amqp(event)
    message = aio_pika.Message(body, headers=headers, content_type="application/json")
    await publish(
        stack.probe.settings.amqp_url, stack.topology.events_exchange, event.type, message
    )

    async def parked() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await stack.http.get("/v1/dead-letters")).json()["items"]
        return items

    letters = await wait_for(parked, timeout=60, what="the future event to be dead-lettered")
    assert "version 7" in letters[0]["reason"]
    assert (await stack.http.get("/v1/events")).json()["items"] == []  # nothing half-read
    response = await stack.http.post("/v1/events", json=_captured("F-2") | {"dataversion": 7})
    assert response.status_code == 422


async def test_a_signal_via_http_reaches_the_wait_and_one_sent_twice_counts_once(
    stack: Stack,
) -> None:
    await _up(stack, approved)
    instance_id = await stack.start({}, saga="approved")
    path = f"/v1/instances/{instance_id}/signals/approve"
    first = await stack.http.post(path, json={"data": {"by": "ann"}, "id": "s-1"})
    assert first.status_code == 200, first.text
    assert first.json()["outcome"] in ("delivered", "kept")
    again = await stack.http.post(path, json={"data": {"by": "bob"}, "id": "s-1"})
    assert again.json()["outcome"] == "duplicate"
    assert await stack.probe.wait_terminal(instance_id) == "completed"
    assert (await _received(stack, instance_id, "approval"))["data"] == {"by": "ann"}
    ended = await stack.http.post(path, json={"data": None})
    assert ended.status_code == 409
    assert ended.json()["type"] == "urn:warren:problem:invalid-state"


async def test_the_published_event_carries_cloudevents_headers(stack: Stack) -> None:
    await _up(stack, paid)
    connection = await aio_pika.connect(stack.probe.settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(stack.topology.events_exchange)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="order.paid")

        instance_id = await stack.start({"order_id": "P-1"}, saga="paid")
        await _waiting(stack, instance_id)
        await _post_event(stack, _captured("P-1", 42))
        assert await stack.probe.wait_terminal(instance_id) == "completed"

        async def got() -> aio_pika.abc.AbstractIncomingMessage | None:
            return await queue.get(fail=False, no_ack=True)

        message = await wait_for(got, timeout=60, what="the order.paid event")
    assert message is not None
    headers = message.headers
    assert headers["ce-type"] == "order.paid"
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-source"] == "warren/sagas/paid"
    assert headers["ce-subject"] == instance_id
    assert headers["ce-correlationid"] == instance_id
    assert headers["ce-dataversion"] == "1"
    assert headers["ce-id"]
    assert headers["ce-time"]
    assert message.content_type == "application/json"
    assert json.loads(message.body) == {"order_id": "P-1", "amount": 42}
    emitted = [h for h in await stack.probe.history(instance_id) if h["type"] == "event_emitted"]
    assert [h["data"]["id"] for h in emitted] == [headers["ce-id"]]


async def test_an_upcaster_turns_an_old_event_into_the_shape_the_wait_reads(
    stack: Stack,
) -> None:
    stack.processes.env["WARREN_UPCASTERS"] = "tests.apps.upcasters"
    await _up(stack, paid)
    by_broker = await stack.start({"order_id": "U-1"}, saga="paid")
    by_api = await stack.start({"order_id": "U-2"}, saga="paid")
    old = CloudEvent(
        id="old-1",
        source="payments",
        type="payment.captured",
        dataversion=1,
        data={"order": "U-1", "cents": 4200},
    )
    body, headers = to_amqp(old)
    message = aio_pika.Message(body, headers=headers, content_type="application/json")
    await publish(stack.probe.settings.amqp_url, stack.topology.events_exchange, old.type, message)
    await _post_event(
        stack,
        {
            "id": "old-2",
            "source": "payments",
            "type": "payment.captured",
            "dataversion": 1,
            "data": {"order": "U-2", "cents": 150},
        },
    )
    for instance_id, order_id, amount in ((by_broker, "U-1", 42), (by_api, "U-2", 1.5)):
        assert await stack.probe.wait_terminal(instance_id) == "completed"
        received = await _received(stack, instance_id, "payment")
        assert received["data"] == {"order_id": order_id, "amount": amount}
    recorded = (await stack.http.get("/v1/events")).json()["items"]
    assert {e["attributes"]["dataversion"] for e in recorded} == {2}  # kept as upcast


async def test_one_event_reaches_every_instance_waiting_for_it_once(stack: Stack) -> None:
    await _up(stack, paid)
    first = await stack.start({"order_id": "M-1"}, saga="paid")
    second = await stack.start({"order_id": "M-1"}, saga="paid")
    for instance_id in (first, second):
        await _waiting(stack, instance_id)
    answer = await _post_event(stack, _captured("M-1"))
    assert sorted(r["instance_id"] for r in answer["reached"]) == sorted([first, second])
    for instance_id in (first, second):
        assert await stack.probe.wait_terminal(instance_id) == "completed"
        assert (await _types(stack, instance_id)).count("event_received") == 1


async def test_a_signal_sent_from_the_cli(stack: Stack) -> None:
    await _up(stack, approved)
    instance_id = await stack.start({}, saga="approved")
    env = {"WARREN_API_URL": str(stack.http.base_url)}
    done = await asyncio.to_thread(
        run_warren, env, "signal", instance_id, "approve", "--data", '{"by": "cli"}'
    )
    assert done.returncode == 0, done.stderr
    assert "signal approve" in done.stdout
    assert await stack.probe.wait_terminal(instance_id) == "completed"
    assert (await _received(stack, instance_id, "approval"))["data"] == {"by": "cli"}
    refused = await asyncio.to_thread(
        run_warren, env, "signal", instance_id, "approve", "--data", "{not json"
    )
    assert refused.returncode != 0
    assert "not valid JSON" in refused.stderr
    assert "Traceback" not in refused.stderr
