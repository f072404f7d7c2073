"""The OpenAPI 3.1 document. Each blueprint module (API and pages) describes its own routes in
`OPENAPI`; the app factory (`broker.create_app`) merges those of the blueprints it registers with
`openapi_document` (a test checks that every served route is described)."""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType
from typing import Any

PROBLEM = {"$ref": "#/components/responses/Problem"}
# A page's errors: an HTML page, or problem+json when the caller asks for JSON; and a page that
# needs a login redirects to it (302, an HTML body).
PAGE_PROBLEM = {"$ref": "#/components/responses/PageProblem"}
HTML = "text/html"
# The version of the document (semantic versioning; docs/API-CHANGELOG.md lists the changes).
API_VERSION = "1.1.0"
STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}


def operation(
    summary: str,
    ok: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    *,
    auth: bool = True,
    status: str = "200",
    content_type: str = "application/json",
    also: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One operation: its summary, success schema (as `content_type`, and the other content
    types in `also` with their schemas), optional JSON body, problem+json errors (an HTML
    page's errors are HTML too)."""
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


def openapi_document(modules: Iterable[ModuleType]) -> dict[str, Any]:
    """The document describing the routes of `modules`, each with its `OPENAPI` path items."""
    paths: dict[str, Any] = {}
    for module in modules:
        paths.update(module.OPENAPI)
    return {
        "openapi": "3.1.0",
        "info": {"title": "weights-escrow broker", "version": API_VERSION},
        "components": {
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
