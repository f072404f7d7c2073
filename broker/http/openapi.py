"""The OpenAPI 3.1 document. Each blueprint module (API and pages) describes its own routes in
`OPENAPI`; the app factory (`broker.create_app`) merges those of the blueprints it registers with
`openapi_document` (a test checks that every served route is described).

A JSON answer is described by its type, a TypedDict of `broker/services/views_types/` that the
service builds it as: `operation(summary, DepositView)`. The document refers to it as
`#/components/schemas/DepositView`, and its JSON Schema is derived from the type by pydantic
(`component_schemas`), once per set of types: the contract is written once, in Python."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from functools import cache
from types import ModuleType
from typing import Any

from flask import Flask
from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode

PROBLEM = {"$ref": "#/components/responses/Problem"}
# A page's errors: an HTML page, or problem+json when the caller asks for JSON; and a page that
# needs a login redirects to it (302, an HTML body).
PAGE_PROBLEM = {"$ref": "#/components/responses/PageProblem"}
HTML = "text/html"
# The version of the document (semantic versioning; docs/API-CHANGELOG.md lists the changes).
API_VERSION = "1.14.0"
STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
SCHEMAS = "#/components/schemas/"
# A schema: written out (a text body, a form, a small request body), or a TypedDict's class.
Schema = dict[str, Any] | type


def operation(
    summary: str,
    ok: Schema | None = None,
    body: Schema | None = None,
    *,
    auth: bool = True,
    status: str = "200",
    content_type: str = "application/json",
    also: dict[str, Schema] | None = None,
) -> dict[str, Any]:
    """One operation: its summary, success schema (as `content_type`, and the other content
    types in `also` with their schemas), optional JSON body, problem+json errors (an HTML
    page's errors are HTML too). A schema given as a TypedDict's class stays one until
    `openapi_document` refers to it and derives its schema."""
    content = {content_type: {"schema": ok or {}}}
    content.update({kind: {"schema": schema} for kind, schema in (also or {}).items()})
    result: dict[str, Any] = {
        "summary": summary,
        "responses": {
            status: {"description": "OK", "content": content},
            "default": PAGE_PROBLEM if content_type == HTML else PROBLEM,
        },
    }
    if body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    if not auth:
        result["security"] = []
    return result


def obj(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or null (a member that is present with no value yet, e.g. a file's sha256
    before it is uploaded)."""
    return {**schema, "type": [schema["type"], "null"]}


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


PROBLEM_SCHEMA = obj(type=STRING, title=STRING, status=INTEGER, detail=STRING, hint=STRING)


def path_params(*names: str) -> list[dict[str, Any]]:
    """Path parameters, strings but `index` (a file's number, `<int:index>` in the route)."""
    return [
        {"name": n, "in": "path", "required": True, "schema": INTEGER if n == "index" else STRING}
        for n in names
    ]


class _Generator(GenerateJsonSchema):
    """pydantic's JSON Schema without a title per member (the member's name says it)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


@cache
def component_schemas(models: tuple[type, ...]) -> dict[str, Any]:
    """The JSON Schemas of `models` (TypedDicts) and of the types they use, by name, as
    `components/schemas` of the document; derived once per set of types."""
    mode: JsonSchemaMode = "serialization"
    inputs = [(model, mode, TypeAdapter[Any](model)) for model in models]
    refs, found = TypeAdapter.json_schemas(
        inputs, ref_template=SCHEMAS + "{model}", schema_generator=_Generator
    )
    for model in models:  # each is named after its class: the document refers to it so
        assert refs[(model, mode)] == {"$ref": SCHEMAS + model.__name__}, model
    return dict(found.get("$defs", {}))


def _referring(value: Any, models: set[type]) -> Any:
    """`value` with each TypedDict's class replaced by a reference, collected in `models`."""
    if isinstance(value, type):
        models.add(value)
        return {"$ref": SCHEMAS + value.__name__}
    if isinstance(value, dict):
        return {key: _referring(item, models) for key, item in value.items()}
    if isinstance(value, list):
        return [_referring(item, models) for item in value]
    return value


def openapi_document(modules: Iterable[ModuleType]) -> dict[str, Any]:
    """The document describing the routes of `modules`, each with its `OPENAPI` path items;
    the schemas of the answers derived from their types."""
    models: set[type] = set()
    paths: dict[str, Any] = {}
    for module in modules:
        paths.update(_referring(module.OPENAPI, models))
    ordered = tuple(sorted(models, key=lambda model: (model.__name__, model.__module__)))
    return {
        "openapi": "3.1.0",
        "info": {"title": "weights-escrow broker", "version": API_VERSION},
        "components": {
            "schemas": copy.deepcopy(component_schemas(ordered)),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
                },
                "PageProblem": {
                    "description": "an error page (problem+json when asked for JSON), or a "
                    "redirect to the login page",
                    "content": {
                        HTML: {"schema": STRING},
                        "application/problem+json": {"schema": PROBLEM_SCHEMA},
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


def document_of(app: Flask) -> dict[str, Any]:
    """The app's document, made on first use from the modules `create_app` registered: deriving
    the schemas takes a noticeable part of a second, which a worker that never serves the
    document (or a CLI command making an app) should not pay at start."""
    if "openapi" not in app.extensions:
        app.extensions["openapi"] = openapi_document(app.extensions["openapi_modules"])
    document: dict[str, Any] = app.extensions["openapi"]
    return document

