"""The suite-wide contract check (tests/contract.py) reports what the document does not say:
a member's type, a content type, a status; and says nothing of an answer that conforms."""

from __future__ import annotations

from collections.abc import Callable

from contract import watch
from flask import Flask, Response, jsonify

from broker.http.openapi import STRING, obj, openapi_document, operation


class _Routes:
    OPENAPI = {"/api/v1/things/{name}": {"get": operation("a thing", obj(name=STRING))}}


def _app(answer: Callable[[], Response]) -> tuple[Flask, list[str]]:
    app = Flask(__name__)
    app.extensions["openapi"] = openapi_document([_Routes])  # type: ignore[list-item]
    app.add_url_rule("/api/v1/things/<name>", "thing", lambda name: answer())
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
