"""RFC 9457 problem details: every error the API returns, with a stable `type` per error."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from orchestrator.api.schema import TYPE_PREFIX, Problem
from orchestrator.errors import (
    BrokerError,
    DefinitionError,
    EventInvalid,
    IdempotencyConflict,
    InputInvalid,
    InstanceNotFound,
    InvalidState,
    NotFound,
    RegistrationConflict,
    SagaNotFound,
    StorageError,
    WarrenError,
)
from orchestrator.persistence.dead_letters import DeadLetterNotFound
from orchestrator.persistence.instances import CursorInvalid

if TYPE_CHECKING:
    from litestar import Request

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


# What each error status means, as the OpenAPI document says it.
_MEANINGS = {
    400: "The request cannot be read: a body that is not JSON or nests too deeply "
    "(`request-malformed`), a `cursor` this API did not hand out (`cursor-invalid`).",
    404: "No such saga, version, instance or dead letter (a path value that cannot exist, too).",
    409: "Not allowed now: `idempotency-conflict`, `invalid-state` or `definition-conflict`.",
    413: "The body is over `WARREN_MAX_BODY_BYTES` (`request-too-large`).",
    422: "A value that is not valid, named in `errors`: `request-invalid` (shape, type or "
    "bounds), `input-invalid` (the saga's input schema), `definition-invalid`, "
    "`event-invalid` (an event's data against its type's schema, or its version).",
    503: "Postgres or RabbitMQ does not answer; try again (`database-unavailable`, "
    "`broker-unavailable`).",
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """The OpenAPI entries for the errors a route answers: problem+json with `Problem`."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            description=_MEANINGS[status],
            generate_examples=False,
        )
        for status in statuses
    }


# error class → (HTTP status, stable type slug, title); the first match wins.
_WARREN_ERRORS: list[tuple[type[WarrenError], int, str, str]] = [
    (SagaNotFound, HTTP_404_NOT_FOUND, "saga-not-found", "Saga not found"),
    (InstanceNotFound, HTTP_404_NOT_FOUND, "instance-not-found", "Instance not found"),
    (
        InputInvalid,
        HTTP_422_UNPROCESSABLE_ENTITY,
        "input-invalid",
        "Input does not match the saga's schema",
    ),
    (
        DefinitionError,
        HTTP_422_UNPROCESSABLE_ENTITY,
        "definition-invalid",
        "Saga definition is not valid",
    ),
    (
        RegistrationConflict,
        HTTP_409_CONFLICT,
        "definition-conflict",
        "Definition conflicts with a stored one",
    ),
    (
        IdempotencyConflict,
        HTTP_409_CONFLICT,
        "idempotency-conflict",
        "Key used for another request",
    ),
    (InvalidState, HTTP_409_CONFLICT, "invalid-state", "Not allowed in the instance's status"),
    (CursorInvalid, HTTP_400_BAD_REQUEST, "cursor-invalid", "Cursor is not valid"),
    (DeadLetterNotFound, HTTP_404_NOT_FOUND, "dead-letter-not-found", "Dead letter not found"),
    (EventInvalid, HTTP_422_UNPROCESSABLE_ENTITY, "event-invalid", "Event is not valid"),
    (NotFound, HTTP_404_NOT_FOUND, "not-found", "Not Found"),
    (StorageError, HTTP_503_SERVICE_UNAVAILABLE, "database-unavailable", "Database unavailable"),
    (BrokerError, HTTP_503_SERVICE_UNAVAILABLE, "broker-unavailable", "Broker unavailable"),
]


def problem(
    status: int, slug: str, title: str, detail: str, **extra: Any
) -> Response[dict[str, Any]]:
    body = {"type": TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail, **extra}
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON)


def problem_of(exc: WarrenError) -> Problem | None:
    """The problem details a Warren error is answered with (None: not one the API expects)."""
    for cls, status, slug, title in _WARREN_ERRORS:
        if isinstance(exc, cls):
            errors = exc.errors if isinstance(exc, InputInvalid | EventInvalid) else []
            kind = TYPE_PREFIX + slug
            return Problem(type=kind, title=title, status=status, detail=exc.message, errors=errors)
    return None


def warren_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, WarrenError)
    found = problem_of(exc)
    if found is None:
        return internal_error_handler(_, exc)
    body = msgspec.structs.asdict(found)
    if not found.errors:
        del body["errors"]  # only the errors that name several failures say it
    return Response(content=body, status_code=found.status, media_type=PROBLEM_JSON)


def validation_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """A body or a query value not of the documented shape or bounds: 422 naming it. A path
    value out of its bounds names nothing that can exist: 404."""
    assert isinstance(exc, ValidationException)
    errors = exc.extra if isinstance(exc.extra, list) else []
    if errors and all(isinstance(e, dict) and e.get("source") == "path" for e in errors):
        return problem(HTTP_404_NOT_FOUND, "not-found", "Not Found", "nothing at this path")
    return problem(
        HTTP_422_UNPROCESSABLE_ENTITY,
        "request-invalid",
        "Request is not valid",
        exc.detail,
        errors=errors,
    )


_HTTP_SLUGS = {
    400: "request-malformed",
    404: "not-found",
    405: "method-not-allowed",
    413: "request-too-large",
    415: "unsupported-media-type",
}


def http_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Litestar's own errors: a body that does not parse (400), an unknown route (404), …"""
    assert isinstance(exc, HTTPException)
    slug = _HTTP_SLUGS.get(exc.status_code, "http-error")
    response = problem(exc.status_code, slug, HTTPStatus(exc.status_code).phrase, exc.detail)
    response.headers.update(exc.headers or {})  # the Allow of a 405
    return response


def too_deep_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """JSON nested beyond what the decoder recurses into (it raises RecursionError)."""
    return problem(
        HTTP_400_BAD_REQUEST,
        "request-malformed",
        "Bad Request",
        "the body nests too deeply to be read",
    )


def internal_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error in the API", exc_info=exc)
    return problem(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal-error",
        "Internal error",
        "the server failed; see its logs",
    )


exception_handlers = {
    WarrenError: warren_error_handler,
    ValidationException: validation_error_handler,
    HTTPException: http_error_handler,
    RecursionError: too_deep_handler,
    Exception: internal_error_handler,
}
