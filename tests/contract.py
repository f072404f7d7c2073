"""The API contract, checked on every answer the tests see: `watch(app)` adds an `after_request`
hook that holds each `/api/v1` answer against the app's own OpenAPI document (a declared status,
a declared content type, a JSON body valid by the declared schema) and records what does not
conform; the `app` fixture (tests/conftest.py) fails the test that saw it."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Flask, Request, request
from jsonschema import Draft202012Validator
from werkzeug.wrappers import Response

from broker.http.openapi import document_of

_CONVERTER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def _templated(rule: str) -> str:
    """`/api/v1/deposits/<deposit_id>/files/<int:index>` as the document writes it."""
    return _CONVERTER.sub(r"{\1}", rule)


def _response_spec(document: dict[str, Any], operation: dict[str, Any], status: int) -> Any:
    responses = operation.get("responses", {})
    spec = responses.get(str(status), responses.get("default"))
    if spec is not None and "$ref" in spec:  # only "#/components/responses/…" are used
        spec = document["components"]["responses"][spec["$ref"].rsplit("/", 1)[1]]
    return spec


def _closed(schema: Any) -> Any:
    """`schema` with every object of declared members closed to others: an answer with a
    member its type does not declare is reported (the published document leaves objects open,
    so that a member may be added in a minor version)."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


def _rooted(document: dict[str, Any], schema: Any) -> dict[str, Any]:
    """`schema` with the document's schemas beside it, so that its references
    (`#/components/schemas/…`) resolve; the objects of those (the answers' types) closed.
    A problem's schema stays open: RFC 9457 allows extension members."""
    schemas = _closed(document.get("components", {}).get("schemas", {}))
    return {"allOf": [schema], "components": {"schemas": schemas}}


def violation(document: dict[str, Any], asked: Request, response: Response) -> str | None:
    """What in `response` the document does not describe, or None."""
    if asked.url_rule is None:  # 404 or 405 from routing: no operation to hold it against
        return None
    where = f"{asked.method} {asked.path} -> {response.status_code}"
    item = document["paths"].get(_templated(asked.url_rule.rule))
    if item is None:
        return f"{where}: the route {asked.url_rule.rule} is not in the document"
    operation = item.get(asked.method.lower())
    if operation is None:
        if asked.method in ("HEAD", "OPTIONS"):
            return None
        return f"{where}: the method is not in the document"
    spec = _response_spec(document, operation, response.status_code)
    if spec is None:
        return f"{where}: the status is not declared"
    if response.status_code in (204, 304) or response.direct_passthrough:
        return None
    kind = response.mimetype or ""
    content = spec.get("content", {})
    if kind not in content:
        return f"{where}: the content type {kind!r} is not declared ({sorted(content)})"
    if kind != "application/json" and not kind.endswith("+json"):  # NDJSON, CSV, text: strings
        return None
    schema = content[kind].get("schema", {})
    body = json.loads(response.get_data())
    found = {  # each member once, not once per item of an array
        "/".join("*" if isinstance(part, int) else str(part) for part in error.absolute_path)
        or "(the body)": error.message
        for error in Draft202012Validator(_rooted(document, schema)).iter_errors(body)
    }
    if found:
        return f"{where}: " + "; ".join(f"at {at}: {what}" for at, what in sorted(found.items()))
    return None


def watch(app: Flask) -> list[str]:
    """Check every `/api/v1` answer of `app` against its document; returns the list that the
    violations are appended to."""
    violations: list[str] = []

    @app.after_request
    def _check(response: Response) -> Response:
        if request.path.startswith("/api/v1/"):
            found = violation(document_of(app), request, response)
            if found is not None and found not in violations:
                violations.append(found)
        return response

    return violations
