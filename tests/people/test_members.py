import json

import pytest
from sqlalchemy import select

from broker.adapters.db.models import AuditEvent


def test_an_org_admin_grants_and_revokes_a_member_role(client, make_person):
    admin = make_person("ada@acme.example", org_roles=(("acme-ai", "admin"),))
    member = make_person("bob@uni.example")
    granted = client.post("/api/v1/orgs/acme-ai/members", headers=admin.auth,
                          json={"user": member.user_id, "role": "reviewer"})
    assert granted.status_code == 200, granted.json
    listed = client.get("/api/v1/orgs/acme-ai/members", headers=admin.auth).json["members"]
    assert {(m["email"], m["role"]) for m in listed} >= {("bob@uni.example", "reviewer")}
    me = client.get("/api/v1/me", headers=member.auth).json
    assert me["roles"]["orgs"] == {"acme-ai": ["reviewer"]}
    client.delete("/api/v1/orgs/acme-ai/members", headers=admin.auth,
                  json={"user": member.user_id, "role": "reviewer"})
    assert client.get("/api/v1/me", headers=member.auth).json["roles"]["orgs"] == {}


def test_a_reviewer_cannot_manage_members_and_is_told_which_role_is_needed(client, make_person):
    reviewer = make_person("rita@acme.example", org_roles=(("acme-ai", "reviewer"),))
    response = client.post("/api/v1/orgs/acme-ai/members", headers=reviewer.auth,
                           json={"user": reviewer.user_id, "role": "admin"})
    assert response.status_code == 403
    assert "admin" in response.json["detail"]


def test_only_an_operator_appoints_auditors(client, make_person):
    operator = make_person("op@escrow.example", global_roles=("operator",))
    admin = make_person("ada@acme.example", org_roles=(("acme-ai", "admin"),))
    auditor = make_person("audrey@audit.example")
    refused = client.post("/api/v1/roles", headers=admin.auth,
                          json={"user": auditor.user_id, "role": "auditor"})
    assert refused.status_code == 403
    granted = client.post("/api/v1/roles", headers=operator.auth,
                          json={"user": auditor.user_id, "role": "auditor"})
    assert granted.status_code == 200
    assert client.get("/api/v1/me", headers=auditor.auth).json["roles"]["global"] == ["auditor"]


def test_role_changes_are_audited_without_personal_data(escrow, client, make_person):
    admin = make_person("ada@acme.example", org_roles=(("acme-ai", "admin"),))
    member = make_person("bob@uni.example")
    client.post("/api/v1/orgs/acme-ai/members", headers=admin.auth,
                json={"user": member.user_id, "role": "depositor"})
    with escrow.uow() as uow:
        leaves = list(uow.session.scalars(
            select(AuditEvent.leaf).where(AuditEvent.action == "role.granted")))
    assert leaves
    for leaf in leaves:
        assert b"@" not in leaf  # no email in the log
        assert json.loads(leaf)["subject"]["user_commitment"]


def test_me_describes_a_person(client, make_person):
    person = make_person("bob@uni.example")
    me = client.get("/api/v1/me", headers=person.auth).json
    assert me["issuer"] == "https://idp.uni.example"
    assert me["email"] == "bob@uni.example" and me["email_verified"] is True
    assert me["auth_time"]


def test_me_without_an_identity_is_401(client):
    assert client.get("/api/v1/me").status_code == 401


def test_only_an_operator_lists_every_user_and_their_roles(escrow, make_person):
    """`escrow admin user list` goes through `members.list_users`, which asks `authorize`."""
    from broker.domain.principals import OPERATOR, Principal
    from broker.errors import Forbidden
    from broker.services import members

    admin = make_person("ada@acme.example", org_roles=(("acme-ai", "admin"),))
    operator = make_person("op@escrow.example", global_roles=("operator",))
    with escrow.uow() as uow:
        as_admin = Principal(kind="user", id=str(admin.user_id),
                             org_roles=frozenset({("acme-ai", "admin")}))
        with pytest.raises(Forbidden) as refused:
            members.list_users(uow, as_admin)
        assert "users.read needs the global role operator" in refused.value.message
        as_operator = Principal(kind="user", id=str(operator.user_id),
                                global_roles=frozenset({"operator"}))
        listed = members.list_users(uow, as_operator)
        assert listed == members.list_users(uow, OPERATOR)
    assert [(u["email"], u["roles"]) for u in listed] == [
        ("ada@acme.example", ["admin@acme-ai"]),
        ("op@escrow.example", ["operator"]),
    ]


def test_only_an_operator_makes_users_and_login_links(escrow, make_person):
    """`escrow admin user create` and `login-link` go through services that ask `authorize`
    and commit; a refused call leaves no user, link or audit event behind."""
    from broker.domain.principals import OPERATOR, Principal
    from broker.errors import Forbidden
    from broker.services import people, sessions

    admin = make_person("ada@acme.example", org_roles=(("acme-ai", "admin"),))
    as_admin = Principal(kind="user", id=str(admin.user_id),
                         org_roles=frozenset({("acme-ai", "admin")}))
    claims = people.Claims(email="new@uni.example", email_verified=True, name=None)
    with escrow.uow() as uow:
        events = len(uow.session.scalars(select(AuditEvent)).all())
        with pytest.raises(Forbidden, match="users.write needs the global role operator"):
            people.create_user(uow, as_admin, "local", "new@uni.example", claims)
        with pytest.raises(Forbidden, match="users.write"):
            sessions.issue_login_link(uow, as_admin, "ada@acme.example")
    with escrow.uow() as uow:
        assert people.find_user(uow, "local", "new@uni.example") is None
        assert len(uow.session.scalars(select(AuditEvent)).all()) == events
        made = people.create_user(uow, OPERATOR, "local", "new@uni.example", claims)
        assert sessions.issue_login_link(uow, OPERATOR, str(made.id)).startswith("ell_")
    with escrow.uow() as uow:
        actions = [e.action for e in uow.session.scalars(select(AuditEvent)).all()][events:]
        assert actions == ["user.created", "login_link.created"]
