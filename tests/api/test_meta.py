import re


def test_healthz_reports_database_store_and_custody(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert set(response.json["checks"]) == {"database", "object_store", "key_custody"}
    assert all(check["ok"] for check in response.json["checks"].values())


def test_healthz_answers_503_when_the_database_is_gone(app, client):
    escrow = app.extensions["escrow"]
    escrow.engine.dispose()
    from sqlalchemy import create_engine

    escrow.engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["checks"]["database"]["ok"] is False


def test_the_openapi_document_describes_every_route(app, client):
    document = client.get("/api/v1/openapi.json").json
    documented = {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method))
    assert served == documented


def test_keys_publishes_the_manifest_and_checkpoint_keys(client):
    keys = client.get("/api/v1/keys").json
    assert keys["manifest"]["algorithm"] == "ed25519"
    assert keys["checkpoint"]["verifier_key"].startswith(keys["checkpoint"]["origin"] + "+")


def test_unknown_routes_answer_problem_json(client):
    response = client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
