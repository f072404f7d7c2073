"""Undeclared methods (schemathesis's `unsupported_method` check, written out: its fuzzing API
does not make such calls): a method no route of a path serves is answered 405 with an `Allow`
header naming exactly the methods the document declares there; a method another route serves
(GET /requests/explain is the request "explain") is one the document declares on that route."""

from __future__ import annotations

import re

from werkzeug.exceptions import MethodNotAllowed, NotFound

METHODS = ("get", "post", "put", "patch", "delete")


def _templated(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def test_every_undeclared_method_is_405_with_the_declared_ones_in_allow(app):
    client = app.test_client()
    document = client.get("/api/v1/openapi.json").json
    routes = app.url_map.bind("localhost")
    wrong: list[str] = []
    for path, item in document["paths"].items():
        concrete = re.sub(r"\{[a-z_]+\}", "1", path)  # "1" fits every converter (int, string)
        served: set[str] = set()
        for method in METHODS:
            try:
                rule, _ = routes.match(concrete, method.upper(), return_rule=True)
            except MethodNotAllowed:
                continue
            except NotFound:
                wrong.append(f"{method.upper()} {path}: no route, but the path is declared")
                break
            served.add(method)
            if method not in document["paths"].get(_templated(rule.rule), {}):
                wrong.append(f"{method.upper()} {path}: served by {rule.rule}, undeclared")
        assert served >= {m for m in METHODS if m in item}, path
        for method in sorted(set(METHODS) - served):
            answer = client.open(concrete, method=method.upper())
            allowed = {m.strip().lower() for m in answer.headers.get("Allow", "").split(",")}
            if answer.status_code != 405 or allowed & set(METHODS) != served:
                wrong.append(f"{method.upper()} {path}: {answer.status_code}, Allow {allowed}")
    assert not wrong, "\n".join(wrong)
