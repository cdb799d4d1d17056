"""Where Litestar 2's OpenAPI document and OPTIONS answers fall short of the API, corrected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.plugins.prometheus import PrometheusController
from litestar.status_codes import HTTP_204_NO_CONTENT

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition


class ClosedStructSchemas(StructSchemaPlugin):
    """A body struct that refuses unknown fields (`forbid_unknown_fields`) says so:
    `additionalProperties: false`. Litestar's own struct plugin leaves it out."""

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if isinstance(info, msgspec.inspect.StructType) and info.forbid_unknown_fields:
            schema.additional_properties = False
        return schema


@dataclass
class OptionalBody(Operation):
    """An operation whose body may be left out (Litestar 2 marks every body required)."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False


@dataclass
class AlsoPlainText(Operation):
    """An operation whose 200 may be text (`text/plain`) too, as a query parameter asks:
    Litestar documents one media type per status, the return annotation's."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            ok.content["text/plain"] = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))


async def allow_every_method(request: Request[Any, Any, Any]) -> Response[None] | None:
    """Answer OPTIONS with every method of the path. Litestar 2 lists only those of the first
    handler registered on it (litestar#4169, fixed in 3.0): GET alone on /v1/definitions.
    Async: Litestar runs a plain function in a worker thread, for every request."""
    if request.method != "OPTIONS":
        return None
    template = request.scope["path_template"]
    methods = {
        m for route in request.app.routes if route.path_format == template for m in route.methods
    }
    return Response(
        None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": ", ".join(sorted(methods))}
    )


class MetricsController(PrometheusController):
    """Prometheus' text format for scrapers, not part of the JSON API's document."""

    include_in_schema = False
