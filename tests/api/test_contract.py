"""The suite-wide contract check (tests/contract.py) reports what the document does not say:
a member's type, a member the answer's type does not declare, a content type, a status; and
says nothing of an answer that conforms. The document's answers are the services' types."""

from __future__ import annotations

from collections.abc import Callable
from typing import NotRequired

from contract import watch
from flask import Flask, Response, jsonify
from typing_extensions import TypedDict

from broker.http.openapi import (
    SCHEMAS,
    STRING,
    component_schemas,
    document_of,
    obj,
    openapi_document,
    operation,
)
from broker.services import views_types


class Thing(TypedDict):
    name: str
    size: NotRequired[int | None]


class _Routes:
    OPENAPI = {
        "/api/v1/things/{name}": {"get": operation("a thing", obj(name=STRING))},
        "/api/v1/typed/{name}": {"get": operation("a typed thing", Thing)},
    }


def _app(answer: Callable[[], Response]) -> tuple[Flask, list[str]]:
    app = Flask(__name__)
    app.extensions["openapi"] = openapi_document([_Routes])  # type: ignore[list-item]
    app.add_url_rule("/api/v1/things/<name>", "thing", lambda name: answer())
    app.add_url_rule("/api/v1/typed/<name>", "typed", lambda name: answer())
    return app, watch(app)


def test_a_conforming_answer_passes() -> None:
    app, violations = _app(lambda: jsonify(name="a"))
    assert app.test_client().get("/api/v1/things/a").status_code == 200
    assert violations == []


def test_a_null_where_a_string_is_declared_is_reported() -> None:
    app, violations = _app(lambda: jsonify(name=None))
    app.test_client().get("/api/v1/things/a")
    assert violations == ["GET /api/v1/things/a -> 200: at name: None is not of type 'string'"]


def test_an_undeclared_content_type_is_reported() -> None:
    app, violations = _app(lambda: Response("a", mimetype="text/plain"))
    app.test_client().get("/api/v1/things/a")
    assert len(violations) == 1
    assert "the content type 'text/plain' is not declared" in violations[0]


def test_a_typed_answer_is_checked_against_its_type() -> None:
    app, violations = _app(lambda: jsonify(name="a", size=None))
    app.test_client().get("/api/v1/typed/a")
    assert violations == []
    app, violations = _app(lambda: jsonify(size=1))
    app.test_client().get("/api/v1/typed/a")
    assert violations == [
        "GET /api/v1/typed/a -> 200: at (the body): 'name' is a required property"
    ]


def test_a_member_the_type_does_not_declare_is_reported() -> None:
    app, violations = _app(lambda: jsonify(name="a", colour="red"))
    app.test_client().get("/api/v1/typed/a")
    assert len(violations) == 1
    assert "'colour' was unexpected" in violations[0]


def test_every_json_answer_of_the_api_is_a_services_type(app) -> None:
    """No hand-written schema of a JSON answer under /api/v1 or /oauth (the OAuth endpoints'
    answers and errors are RFC 6749's and RFC 8628's, typed; the document is as OpenAPI says;
    /v1 answers as OpenAI's API does): each refers to a TypedDict of
    broker/services/views_types/, and the document's schemas are those derived from them."""
    document = document_of(app)
    used = set()
    for path, item in document["paths"].items():
        for method, spec in item.items():
            if path == "/api/v1/openapi.json" or not path.startswith(
                ("/api/v1/", "/healthz", "/oauth/")
            ):
                continue
            if method == "parameters":
                continue
            for status, answer in spec["responses"].items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                oauth_error = path.startswith("/oauth/") and status.startswith("4")
                if not (status.startswith("2") or oauth_error) or schema is None:
                    continue
                where = f"{method.upper()} {path} -> {status}"
                assert set(schema) == {"$ref"}, f"{where}: a schema written by hand: {schema}"
                name = schema["$ref"].removeprefix(SCHEMAS)
                assert views_types.is_typeddict(getattr(views_types, name, None)), where
                used.add(getattr(views_types, name))
    assert len(used) > 30
    ordered = tuple(sorted(used, key=lambda model: model.__name__))
    assert document["components"]["schemas"] == component_schemas(ordered)
