"""The OpenAPI document: request bodies are parsed by hand (so bad JSON is a 400, not FastAPI's 422), which means
FastAPI cannot see their models — this module puts their schemas and lucid's error answers back into /openapi.json."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from lucid.server.errors import ErrorResponse

_ERROR = {"model": ErrorResponse}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {**_ERROR, "description": "Invalid request: malformed JSON, wrong types, out-of-range values, context "
                                   "length exceeded (code context_length_exceeded)."},
    401: {**_ERROR, "description": "Missing or wrong API key (only when the server runs with --api-key)."},
    404: {**_ERROR, "description": "The model is not served here (code model_not_found)."},
    413: {**_ERROR, "description": "The request body is over the size limit."},
    429: {**_ERROR, "description": "The waiting queue is full; see Retry-After."},
    503: {**_ERROR, "description": "Loading, shutting down, or the engine has stopped; see Retry-After."},
}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body is `model`."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def install_openapi(app: FastAPI, body_models: list[type[BaseModel]]) -> None:
    """Replace app.openapi with one that includes `body_models` and never advertises 422."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in body_models:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        for path in doc.get("paths", {}).values():
            for operation in path.values():
                responses = operation.get("responses", {})
                if "422" in responses:  # FastAPI's default for validation errors; lucid answers them with 400
                    del responses["422"]
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
