"""The studies' routes through the app, each answer held against the OpenAPI document (the `app`
fixture's watch): register, decide, consent, list, captures, withdraw, close; and the refusals'
hints. (Capture itself, through a model worker: tests/hosted/test_studies.py.)"""

from __future__ import annotations

from broker import age


def _model(escrow) -> None:
    from broker.adapters.db.models import Model, Organisation

    with escrow.uow() as uow:
        org = uow.session.query(Organisation).filter_by(name="acme-ai").one()
        uow.session.add(Model(org_id=org.id, name="tiny"))
        uow.commit()


def test_the_studies_routes_answer_as_documented(escrow, client, make_person):
    lab = make_person("ada@acme.example", (("acme-ai", "admin"),))
    rosa = make_person("rosa@uni.example")
    pat = make_person("pat@uni.example")
    _model(escrow)
    recipient = str(age.generate_x25519_identity().to_recipient())

    made = client.post("/api/v1/studies", headers=rosa.auth, json={
        "model": "acme-ai/tiny", "name": "s1", "title": "A year of tutoring",
        "purpose": "how people ask", "recipients": [recipient]})
    assert made.status_code == 201, made.json
    study = made.json["id"]
    assert made.json["model"] == "acme-ai/tiny" and made.json["state"] == "proposed"
    refused = client.post("/api/v1/studies", headers=rosa.auth, json={
        "model": "acme-ai/tiny", "name": "s2", "purpose": "p", "recipients": []})
    assert refused.status_code == 422 and "age1" in refused.json["hint"]

    assert client.post(f"/api/v1/studies/{study}/consent", headers=pat.auth).status_code == 409
    assert client.post(f"/api/v1/studies/{study}/approve", headers=rosa.auth,
                       json={}).status_code == 403
    approved = client.post(f"/api/v1/studies/{study}/approve", headers=lab.auth,
                           json={"note": "fine"})
    assert approved.status_code == 200 and approved.json["state"] == "approved"

    given = client.post("/api/v1/studies/s1/consent", headers=pat.auth)
    assert given.status_code == 200 and given.json["withdrawn_at"] is None
    listed = client.get("/api/v1/studies", headers=pat.auth).json["studies"]
    assert [(s["name"], s["consenting"]) for s in listed] == [("s1", True)]
    assert client.get("/api/v1/studies/s1", headers=pat.auth).json["consenting"] is True

    page = client.get(f"/api/v1/studies/{study}/captures?limit=5", headers=rosa.auth)
    assert page.status_code == 200 and page.json == {"captures": [], "next": None}
    assert client.get(f"/api/v1/studies/{study}/captures", headers=pat.auth).status_code == 403
    assert client.get(f"/api/v1/studies/{study}/captures?limit=0",
                      headers=rosa.auth).status_code == 422
    missing = client.get(f"/api/v1/studies/{study}/captures/cp_0/url", headers=rosa.auth)
    assert missing.status_code == 404 and missing.json["hint"]

    withdrawn = client.delete("/api/v1/studies/s1/consent", headers=pat.auth)
    assert withdrawn.status_code == 200 and withdrawn.json["withdrawn_at"]
    assert client.delete("/api/v1/studies/s1/consent", headers=pat.auth).status_code == 404
    closed = client.post(f"/api/v1/studies/{study}/close", headers=rosa.auth)
    assert closed.status_code == 200 and closed.json["state"] == "closed"
    rejected = client.post(f"/api/v1/studies/{study}/reject", headers=lab.auth, json={})
    assert rejected.status_code == 409


def test_the_owner_adds_a_member_who_lists_the_captures(escrow, client, make_person):
    make_person("ada@acme.example", (("acme-ai", "admin"),))  # the lab
    rosa = make_person("rosa@uni.example")
    sam = make_person("sam@uni.example", name="Sam Team")
    pat = make_person("pat@uni.example")
    _model(escrow)
    made = client.post("/api/v1/studies", headers=rosa.auth, json={
        "model": "acme-ai/tiny", "name": "s1", "purpose": "how people ask",
        "recipients": [str(age.generate_x25519_identity().to_recipient())]})
    study = made.json["id"]
    members = f"/api/v1/studies/{study}/members"

    assert client.get(f"/api/v1/studies/{study}/captures", headers=sam.auth).status_code == 404
    refused = client.post(members, headers=pat.auth, json={"user": "pat@uni.example"})
    assert refused.status_code == 404  # proposed: not shown to others
    missing = client.post(members, headers=rosa.auth, json={})
    assert missing.status_code == 422 and missing.json["hint"]
    added = client.post(members, headers=rosa.auth, json={"user": "sam@uni.example"})
    assert added.status_code == 200, added.json
    assert [(m["user"], m["name"]) for m in added.json["members"]] == [
        (str(sam.user_id), "Sam Team")]
    assert client.get(members, headers=sam.auth).json == added.json
    page = client.get(f"/api/v1/studies/{study}/captures", headers=sam.auth)
    assert page.status_code == 200 and page.json == {"captures": [], "next": None}
    by_member = client.post(members, headers=sam.auth, json={"user": "pat@uni.example"})
    assert by_member.status_code == 403 and "owner" in by_member.json["hint"]

    # the owner removes Sam: Sam no longer lists the captures; the team after it answers
    assert client.delete(f"{members}/sam@uni.example", headers=pat.auth).status_code == 404
    assert client.delete(f"{members}/{sam.user_id}", headers=sam.auth).status_code == 403
    owner = client.delete(f"{members}/{rosa.user_id}", headers=rosa.auth)
    assert owner.status_code == 409 and owner.json["hint"]
    stranger = client.delete(f"{members}/pat@uni.example", headers=rosa.auth)
    assert stranger.status_code == 404 and "member list" in stranger.json["hint"]
    removed = client.delete(f"{members}/sam@uni.example", headers=rosa.auth)
    assert removed.status_code == 200, removed.json
    assert removed.json == {"study_id": study, "members": []}
    assert client.get(f"/api/v1/studies/{study}/captures", headers=sam.auth).status_code == 404
    assert client.get(members, headers=sam.auth).status_code == 404  # proposed: hidden again
    assert client.get(members, headers=rosa.auth).json == removed.json
