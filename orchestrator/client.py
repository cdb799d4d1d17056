"""A small async client for the Warren HTTP API: start sagas from Python, read, wait, operate.

    async with WarrenClient("http://127.0.0.1:8000") as warren:
        started = await warren.start("order", {"order_id": "A-1", "amount": 30},
                                     idempotency_key="A-1")
        done = await warren.wait(started.id, timeout=60)
        print(done.status)

The `warren` command line uses it. Errors are `ApiError` (the problem details the API sent) or
`ApiUnreachable`; both are `WarrenError`s.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID, uuid4

import httpx
import msgspec

# The schema alone: the client never loads the server (SQLAlchemy, aio-pika, Litestar…).
from orchestrator.api.schema import (
    BatchStart,
    BatchStartBody,
    BatchStartResponse,
    DeadLetterDetail,
    DeadLetterList,
    DefinitionList,
    DefinitionVersions,
    EventList,
    EventReceipt,
    EventRow,
    Graph,
    HistoryPage,
    InstanceList,
    InstanceView,
    PoolList,
    RegisterResponse,
    SignalResponse,
    StartResponse,
    Verification,
    VerificationPage,
)
from orchestrator.errors import WarrenError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from orchestrator.definitions import Saga

__all__ = [
    "ApiError",
    "ApiUnreachable",
    "BatchStart",
    "StartResult",
    "WaitTimeout",
    "WarrenClient",
]

DEFAULT_API_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"completed", "compensated", "failed"})
T = TypeVar("T")


class ApiError(WarrenError):
    """The API refused the request; `status`, `type` and `detail` come from its problem body."""

    def __init__(self, status: int, type: str, detail: str, body: dict[str, Any]) -> None:
        super().__init__(detail)
        self.status = status
        self.type = type
        self.body = body


class ApiUnreachable(WarrenError):
    """No answer from the API at all."""

    retryable = True


class WaitTimeout(WarrenError):
    """The instance did not end within the time given."""


class StartResult(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    saga: str
    version: int
    status: str
    created: bool
    """False when an identical earlier request (same idempotency key) had started it."""


class WarrenClient:
    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("WARREN_API_URL") or DEFAULT_API_URL).rstrip(
            "/"
        )
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> WarrenClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # ---- instances ----------------------------------------------------------------------------

    async def start(
        self,
        saga: str,
        input: Any,
        *,
        idempotency_key: str | None = None,
        version: int | None = None,
        instance_id: UUID | None = None,
        correlation_key: str | None = None,
    ) -> StartResult:
        body: dict[str, Any] = {"input": input}
        if version is not None:
            body["version"] = version
        if instance_id is not None:
            body["instance_id"] = str(instance_id)
        if correlation_key is not None:
            body["correlation_key"] = correlation_key
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = await self._request("POST", f"/v1/sagas/{saga}", json=body, headers=headers)
        started = msgspec.convert(response.json(), StartResponse)
        return _start_result(started, created=response.status_code == 201)

    async def start_many(self, saga: str, starts: list[BatchStart]) -> list[StartResult | ApiError]:
        """Up to 1,000 starts of `saga` in one request; each one's outcome in order: its
        `StartResult`, or the `ApiError` a single start would have raised. Give each start an
        `idempotency_key` (or an `instance_id`) to call again safely after an error."""
        body = msgspec.json.encode(BatchStartBody(starts=starts))
        response = await self._request(
            "POST",
            f"/v1/sagas/{saga}/batch",
            content=body,
            headers={"content-type": "application/json"},
        )
        answer = msgspec.convert(response.json(), BatchStartResponse)
        outcomes: list[StartResult | ApiError] = []
        for result in answer.results:
            if result.instance is not None:
                outcomes.append(_start_result(result.instance, created=result.status == 201))
            else:
                assert result.problem is not None  # the API sends one or the other
                outcomes.append(_problem_error(result.status, msgspec.to_builtins(result.problem)))
        return outcomes

    async def get(self, instance_id: UUID | str) -> InstanceView:
        return await self._get(f"/v1/instances/{instance_id}", InstanceView)

    async def history(
        self, instance_id: UUID | str, *, after_seq: int = 0, limit: int = 500
    ) -> HistoryPage:
        params = {"after_seq": after_seq, "limit": limit}
        return await self._get(f"/v1/instances/{instance_id}/history", HistoryPage, params=params)

    async def list(
        self,
        *,
        saga: str | None = None,
        status: str | None = None,
        correlation_key: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> InstanceList:
        params = {
            k: v
            for k, v in {
                "saga": saga,
                "status": status,
                "correlation_key": correlation_key,
                "limit": limit,
                "cursor": cursor,
            }.items()
            if v is not None
        }
        return await self._get("/v1/instances", InstanceList, params=params)

    async def wait(
        self,
        instance_id: UUID | str,
        *,
        timeout: float = 300.0,  # noqa: ASYNC109 - a deadline for the whole poll, documented
        poll_interval: float = 0.25,
        on_update: Callable[[InstanceView], Awaitable[None] | None] | None = None,
    ) -> InstanceView:
        """Poll until the instance ends (completed, compensated or failed); `on_update` (a
        function or a coroutine function) sees every snapshot that differs from the last one."""
        deadline = time.monotonic() + timeout
        last: InstanceView | None = None
        while True:
            view = await self.get(instance_id)
            if on_update is not None and view != last:
                update = on_update(view)
                if inspect.isawaitable(update):
                    await update
            last = view
            if view.status in TERMINAL:
                return view
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"instance {instance_id} is still {view.status} after {timeout:.0f}s"
                )
            await asyncio.sleep(poll_interval)

    async def cancel(self, instance_id: UUID | str, reason: str | None = None) -> InstanceView:
        body = {"reason": reason} if reason else None
        response = await self._request("POST", f"/v1/instances/{instance_id}/cancel", json=body)
        return msgspec.convert(response.json(), InstanceView)

    async def retry(self, instance_id: UUID | str) -> InstanceView:
        response = await self._request("POST", f"/v1/instances/{instance_id}/retry")
        return msgspec.convert(response.json(), InstanceView)

    async def signal(
        self,
        instance_id: UUID | str,
        name: str,
        data: Any = None,
        *,
        signal_id: str | None = None,
    ) -> SignalResponse:
        """Send signal `name` to an instance: its wait for it takes `data` (or the next one
        will). With `signal_id`, sending it again changes nothing."""
        body: dict[str, Any] = {"data": data}
        if signal_id is not None:
            body["id"] = signal_id
        response = await self._request(
            "POST", f"/v1/instances/{instance_id}/signals/{name}", json=body
        )
        return msgspec.convert(response.json(), SignalResponse)

    # ---- events ---------------------------------------------------------------------------------

    async def publish_event(
        self,
        type: str,
        data: Any = None,
        *,
        source: str,
        id: str | None = None,
        subject: str | None = None,
        dataversion: int = 1,
    ) -> EventReceipt:
        """Publish a domain event through Warren (`POST /v1/events`): what it started and
        which waits it reached. `id` defaults to a new UUID; the same (source, id) twice is
        received once."""
        body: dict[str, Any] = {
            "id": id or str(uuid4()),
            "source": source,
            "type": type,
            "dataversion": dataversion,
            "data": data,
        }
        if subject is not None:
            body["subject"] = subject
        response = await self._request("POST", "/v1/events", json=body)
        return msgspec.convert(response.json(), EventReceipt)

    async def events(
        self,
        *,
        type: str | None = None,
        unmatched: bool = False,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> EventList:
        """Received events, newest first."""
        params: dict[str, Any] = {"limit": limit, "unmatched": unmatched}
        if type is not None:
            params["type"] = type
        if before_seq is not None:
            params["before_seq"] = before_seq
        return await self._get("/v1/events", EventList, params=params)

    async def event(self, seq: int) -> EventRow:
        return await self._get(f"/v1/events/{seq}", EventRow)

    async def verify(self, instance_id: UUID | str) -> Verification:
        """Replay the instance's history through the engine and compare with its snapshot."""
        return await self._get(f"/v1/instances/{instance_id}/verification", Verification)

    async def verifications(
        self, *, after: UUID | str | None = None, limit: int = 50
    ) -> VerificationPage:
        """One page of every instance's verification, in id order (`next_after` goes on)."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = str(after)
        return await self._get("/v1/verifications", VerificationPage, params=params)

    async def verify_all(self, *, page: int = 50) -> AsyncIterator[Verification]:
        """Every instance's verification, page after page."""
        after: UUID | None = None
        while True:
            found = await self.verifications(after=after, limit=page)
            for item in found.items:
                yield item
            if found.next_after is None:
                return
            after = found.next_after

    # ---- definitions and pools ----------------------------------------------------------------

    async def definitions(self) -> DefinitionList:
        return await self._get("/v1/definitions", DefinitionList)

    async def definition(self, name: str) -> DefinitionVersions:
        return await self._get(f"/v1/definitions/{name}", DefinitionVersions)

    async def definition_graph(self, name: str, version: int) -> Graph:
        """Version `version` of saga `name` as a graph: nodes, edges, compensation edges."""
        return await self._get(f"/v1/definitions/{name}/{version}/graph", Graph)

    async def definition_mermaid(self, name: str, version: int) -> str:
        """The same graph as Mermaid text (a ``flowchart TD``)."""
        path = f"/v1/definitions/{name}/{version}/graph"
        return (await self._request("GET", path, params={"format": "mermaid"})).text

    async def register(self, saga: Saga) -> RegisterResponse:
        response = await self._request(
            "POST",
            "/v1/definitions",
            content=saga.to_json(),
            headers={"content-type": "application/json"},
        )
        return msgspec.convert(response.json(), RegisterResponse)

    async def pools(self) -> PoolList:
        return await self._get("/v1/pools", PoolList)

    # ---- dead letters -------------------------------------------------------------------------

    async def dead_letters(
        self,
        *,
        kind: str | None = None,
        instance_id: UUID | str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> DeadLetterList:
        params = {
            k: v
            for k, v in {
                "kind": kind,
                "instance_id": str(instance_id) if instance_id else None,
                "before_id": before_id,
                "limit": limit,
            }.items()
            if v is not None
        }
        return await self._get("/v1/dead-letters", DeadLetterList, params=params)

    async def dead_letter(self, letter_id: int) -> DeadLetterDetail:
        return await self._get(f"/v1/dead-letters/{letter_id}", DeadLetterDetail)

    async def replay_dead_letter(self, letter_id: int) -> DeadLetterDetail:
        response = await self._request("POST", f"/v1/dead-letters/{letter_id}/replay")
        return msgspec.convert(response.json(), DeadLetterDetail, strict=False)

    async def delete_dead_letter(self, letter_id: int) -> None:
        await self._request("DELETE", f"/v1/dead-letters/{letter_id}")

    # ---- plumbing -----------------------------------------------------------------------------

    async def _get(self, path: str, type: type[T], params: dict[str, Any] | None = None) -> T:
        response = await self._request("GET", path, params=params)
        return msgspec.convert(response.json(), type, strict=False)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnreachable(
                f"cannot reach the Warren API at {self.base_url} ({exc.__class__.__name__}); "
                "is `warren api` running? Set WARREN_API_URL to point elsewhere."
            ) from exc
        if response.status_code >= 400:
            raise _api_error(response)
        return response


def _start_result(started: StartResponse, *, created: bool) -> StartResult:
    return StartResult(
        id=started.id,
        saga=started.saga,
        version=started.version,
        status=started.status,
        created=created,
    )


def _api_error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return _problem_error(response.status_code, body, fallback=response.reason_phrase)


def _problem_error(status: int, body: dict[str, Any], *, fallback: str = "") -> ApiError:
    """The error for a problem body: its detail (else `fallback`), with each of its errors."""
    detail = str(body.get("detail") or fallback or "request failed")
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        detail += ": " + "; ".join(str(e) for e in errors)
    return ApiError(status, str(body.get("type", "about:blank")), detail, body)
