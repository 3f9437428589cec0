"""The OpenAPI schema's request bodies, generated from the request models.

FastAPI documents the bodies it parses; the gateway's routes read theirs themselves (bounded
in size and nesting, see gateway/bodies.py), so a route module names each route's body model
with `document_body`, beside the route, and it is added to the schema FastAPI generates.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

REF = "#/components/schemas/{model}"


def document_body(app: FastAPI, path: str, method: str, model: type[BaseModel]) -> None:
    """The JSON body of `method` (lower case) on `path` is `model`, in the OpenAPI schema."""
    app.state.bodies[(path, method)] = model


def install_openapi(app: FastAPI) -> None:
    """Generate the schema with the bodies named by `document_body`."""
    bodies: dict[tuple[str, str], type[BaseModel]] = {}
    app.state.bodies = bodies
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for (path, method), model in bodies.items():
                body = model.model_json_schema(ref_template=REF)
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
                schema["paths"][path][method]["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
                }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
