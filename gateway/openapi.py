"""The OpenAPI 3.1 document, generated from the routes and the pydantic models they declare.

Each endpoint carries an `Operation` (set with `@operation(...)`): its request body, query parameters and responses
as pydantic models. Schemas come from pydantic, so the document cannot drift from what the code validates.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute, Mount, Route

from gateway.views import ErrorBody

REF = "#/components/schemas/{model}"
IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
EVENT_STREAM = "text/event-stream"

ERROR_STATUSES = {
    400: "The body is not valid JSON or form data.",
    401: "No API key (when keys are configured).",
    403: "An API key that is not valid.",
    404: "Not found, or not yours.",
    409: "Conflicts with the resource's state.",
    413: "The body is too large.",
    415: "The content type is not accepted.",
    422: "A field is invalid; `error.field` names it.",
    429: "Too many open event streams for this key.",
    503: "The database, Kafka or the object store is unavailable.",
    504: "No answer from the agents in time.",
}


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    responses: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    multipart: dict[str, Any] | None = None  # a form-data schema accepted besides JSON
    streams: int | None = None  # the status whose response may also be an event stream
    stream_only: bool = False
    public: bool = False
    description: str = ""
    extra_responses: dict[int, str] = field(default_factory=dict)
    json_items: bool = False  # the response is a JSON list of free-form objects
    binary: bool = False  # the success response is a file's bytes


def operation(**spec: Any):  # noqa: ANN201 - a decorator
    def attach(endpoint: Any) -> Any:
        endpoint.__openapi__ = Operation(**spec)
        return endpoint

    return attach


def _routes(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, Route]]:
    found: list[tuple[str, Route]] = []
    for route in routes:
        if isinstance(route, Mount):
            found += _routes(route.routes, prefix + route.path)
        elif isinstance(route, Route) and route.include_in_schema:
            found.append((prefix + route.path, route))
    return found


def _models(routes: list[tuple[str, Route]]) -> list[tuple[type[BaseModel], str]]:
    models: dict[tuple[type[BaseModel], str], None] = {(ErrorBody, "serialization"): None}
    for _, route in routes:
        spec: Operation | None = getattr(route.endpoint, "__openapi__", None)
        if spec is None:
            continue
        if spec.body is not None:
            models[(spec.body, "validation")] = None
        for model in spec.responses.values():
            if model is not None:
                models[(model, "serialization")] = None
    return list(models)


def _path_parameter(name: str) -> dict[str, Any]:
    if name == "model":  # a model is named by its id or its name
        return {"name": name, "in": "path", "required": True, "description": "A model's id or name.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 100}}
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": IDENTIFIER_PATTERN}}


def _parameters(path: str, spec: Operation) -> list[dict[str, Any]]:
    parameters = [_path_parameter(name) for name in re.findall(r"{(\w+)(?::\w+)?}", path)]
    if spec.query is not None:
        schema = spec.query.model_json_schema()
        required = set(schema.get("required", ()))
        for name, prop in schema.get("properties", {}).items():
            prop = {k: v for k, v in prop.items() if k != "title"}
            description = prop.pop("description", None)
            parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if description:
                parameter["description"] = description
            parameters.append(parameter)
    return parameters


def _response(model: type[BaseModel] | None, refs: dict[Any, Any], spec: Operation, status: int) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if spec.binary and status < 300:
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    elif spec.json_items:
        content["application/json"] = {"schema": {"type": "array", "items": {"type": "object"}}}
    elif model is not None and not spec.stream_only:
        content["application/json"] = {"schema": refs[(model, "serialization")]}
    if spec.streams == status:
        content[EVENT_STREAM] = {"schema": {"type": "string"}}
    response: dict[str, Any] = {"description": "Success" if status < 300 else f"HTTP {status}"}
    if content:
        response["content"] = content
    return response


def _operation(path: str, method: str, spec: Operation, refs: dict[Any, Any], endpoint: Any) -> dict[str, Any]:
    name = getattr(endpoint, "__name__", "endpoint")
    description = spec.description or inspect.cleandoc(endpoint.__doc__ or "")
    op: dict[str, Any] = {"operationId": f"{name}_{method}", "summary": spec.summary, "tags": [spec.tag]}
    if description:
        op["description"] = description
    parameters = _parameters(path, spec)
    if parameters:
        op["parameters"] = parameters
    if spec.body is not None:
        content: dict[str, Any] = {"application/json": {"schema": refs[(spec.body, "validation")]}}
        if spec.multipart is not None:
            content["multipart/form-data"] = {"schema": spec.multipart}
        op["requestBody"] = {"required": True, "content": content}
    elif spec.multipart is not None:  # a form-data upload only
        op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": spec.multipart}}}
    responses = {str(status): _response(model, refs, spec, status) for status, model in spec.responses.items()}
    for status, text in spec.extra_responses.items():
        responses[str(status)] = {"description": text}
    error_ref = refs[(ErrorBody, "serialization")]
    for status, text in ERROR_STATUSES.items():
        if str(status) not in responses and (not spec.public or status == 503):
            responses[str(status)] = {"description": text, "content": {"application/json": {"schema": error_ref}}}
    op["responses"] = responses
    if spec.public:
        op["security"] = []
    return op


def build_document(routes: list[BaseRoute], title: str, version: str, description: str) -> dict[str, Any]:
    found = _routes(routes)
    refs, definitions = models_json_schema(_models(found), ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for path, route in found:
        spec: Operation | None = getattr(route.endpoint, "__openapi__", None)
        if spec is None:
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(path, {})[method.lower()] = _operation(path, method.lower(), spec, refs, route.endpoint)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An LFZ API key."}},
        },
        "security": [{"bearer": []}],
    }
