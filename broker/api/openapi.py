"""The OpenAPI 3.1 document for every route the broker serves (a test keeps them in step)."""

from __future__ import annotations

from typing import Any

PROBLEM = {"$ref": "#/components/responses/Problem"}
DEPOSIT = {"$ref": "#/components/schemas/Deposit"}


def _op(
    summary: str,
    ok: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    auth: bool = True,
    status: str = "200",
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {
            status: {"description": "OK", "content": {"application/json": {"schema": ok or {}}}},
            "default": PROBLEM,
        },
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    if not auth:
        operation["security"] = []
    return operation


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


FILE_PARAMS = [
    {"name": "deposit_id", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "index", "in": "path", "required": True, "schema": {"type": "integer"}},
]
DEPOSIT_PARAM = FILE_PARAMS[:1]


def openapi_document() -> dict[str, Any]:
    string, integer = {"type": "string"}, {"type": "integer"}
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
                            "schema": _obj(
                                type=string,
                                title=string,
                                status=integer,
                                detail=string,
                                hint=string,
                            )
                        }
                    },
                }
            },
            "schemas": {
                "Deposit": _obj(
                    deposit_id=string,
                    model=string,
                    version=string,
                    state={"enum": ["open", "verifying", "sealed", "failed"]},
                    recipient=string,
                    recipient_type=string,
                    classical={"type": "boolean"},
                    files={
                        "type": "array",
                        "items": _obj(
                            index=integer, path=string, size=integer, state=string, sha256=string
                        ),
                    },
                ),
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": _op("database, object store and key custody health", auth=False)},
            "/api/v1/openapi.json": {"get": _op("this document", auth=False)},
            "/api/v1/keys": {
                "get": _op("the broker's Ed25519 public keys (manifest, checkpoint)", auth=False)
            },
            "/api/v1/me": {"get": _op("describes the caller")},
            "/api/v1/deposits": {
                "post": _op(
                    "open a deposit of a model version, or resume the existing one",
                    DEPOSIT,
                    _obj(
                        model=string,
                        version=string,
                        classical={"type": "boolean"},
                        extra_recipients={"type": "array", "items": string},
                        files={"type": "array", "items": _obj(path=string, size=integer)},
                    ),
                )
            },
            "/api/v1/deposits/{deposit_id}": {
                "get": _op("a deposit and its files", DEPOSIT),
                "parameters": DEPOSIT_PARAM,
            },
            "/api/v1/deposits/{deposit_id}/files/{index}/upload": {
                "post": _op(
                    "start or resume a file's multipart upload",
                    _obj(part_size=integer, payload_size=integer, parts={"type": "array"}),
                    _obj(restart={"type": "boolean"}),
                ),
                "parameters": FILE_PARAMS,
            },
            "/api/v1/deposits/{deposit_id}/files/{index}/parts": {
                "post": _op(
                    "presigned URLs for parts",
                    _obj(parts={"type": "array"}),
                    _obj(numbers={"type": "array", "items": integer}),
                ),
                "parameters": FILE_PARAMS,
            },
            "/api/v1/deposits/{deposit_id}/files/{index}/header": {
                "put": _op(
                    "register the file's age header (must open with the escrow identity)",
                    body=_obj(header={"type": "string", "contentEncoding": "base64"}),
                ),
                "parameters": FILE_PARAMS,
            },
            "/api/v1/deposits/{deposit_id}/files/{index}/complete": {
                "post": _op(
                    "assemble the parts, check sizes, record the plaintext SHA-256",
                    body=_obj(sha256=string),
                ),
                "parameters": FILE_PARAMS,
            },
            "/api/v1/deposits/{deposit_id}/finalize": {
                "post": _op(
                    "queue verification; the worker seals the deposit", DEPOSIT, status="202"
                ),
                "parameters": DEPOSIT_PARAM,
            },
            "/store/v1/{token}": {
                "parameters": [{"name": "token", "in": "path", "required": True, "schema": string}],
                "put": _op("local store: upload one part with a signed URL", auth=False),
                "get": _op(
                    "local store: download an object with a signed URL (Range allowed)", auth=False
                ),
            },
        },
    }
