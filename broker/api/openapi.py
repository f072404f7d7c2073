"""The OpenAPI 3.1 document. Each blueprint module describes its own routes in `OPENAPI`;
this module only merges them (a test checks that every served route is described)."""

from __future__ import annotations

from typing import Any

PROBLEM = {"$ref": "#/components/responses/Problem"}
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
) -> dict[str, Any]:
    """One operation: its summary, success schema, optional JSON body, problem+json errors."""
    result: dict[str, Any] = {
        "summary": summary,
        "responses": {
            status: {"description": "OK", "content": {content_type: {"schema": ok or {}}}},
            "default": PROBLEM,
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


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def path_params(*names: str) -> list[dict[str, Any]]:
    """Path parameters, strings but `index` (a file's number, `<int:index>` in the route)."""
    return [
        {"name": n, "in": "path", "required": True, "schema": INTEGER if n == "index" else STRING}
        for n in names
    ]


def openapi_document() -> dict[str, Any]:
    from broker.api import access, audit, deposits, keys, meta, ndas, oauth, orgs, store_urls
    from broker.api import models as api_models
    from broker.web import auth as web_auth
    from broker.web import device as web_device
    from broker.web import page_modules

    paths: dict[str, Any] = {}
    for module in (
        meta, deposits, store_urls, orgs, keys, ndas, access, audit, oauth, web_device, web_auth,
        api_models, *page_modules(),
    ):
        paths.update(module.OPENAPI)
    return {
        "openapi": "3.1.0",
        "info": {"title": "weights-escrow broker", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {
                        "application/problem+json": {
                            "schema": obj(
                                type=STRING,
                                title=STRING,
                                status=INTEGER,
                                detail=STRING,
                                hint=STRING,
                            )
                        }
                    },
                }
            },
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
