from datetime import UTC, datetime, timedelta

import pytest

from broker.adapters.db.models import ServiceToken
from broker.domain.principals import OPERATOR
from broker.services import admin


@pytest.mark.parametrize(
    "header",
    ["", "Bearer ", "Bearer esk_0000000000000000_" + "a" * 43, "Basic dXNlcjpwYXNz",
     "Bearer not-a-token"],
)
def test_a_missing_or_wrong_token_gets_401_without_detail(client, lab, header):
    response = client.get("/api/v1/me", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert "esk_" not in response.get_data(as_text=True)


def test_a_valid_token_describes_its_org_and_role(lab):
    me = lab.get("/api/v1/me").json
    assert me == {"kind": "token", "id": lab.token.split("_")[1],
                  "roles": {"orgs": {"acme-ai": ["depositor"]}, "global": []}}


def test_an_expired_token_is_refused_like_a_wrong_one(escrow, lab):
    with escrow.uow() as uow:
        token = uow.session.get(ServiceToken, lab.token.split("_")[1])
        token.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        uow.commit()
    response = lab.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json["detail"] == "the token is invalid, expired or revoked"


def test_a_revoked_token_is_refused_and_the_revocation_is_audited(escrow, lab):
    with escrow.uow() as uow:
        admin.revoke_token(uow, OPERATOR, lab.token.split("_")[1])
    assert lab.get("/api/v1/me").status_code == 401


def test_a_token_of_another_role_cannot_deposit(escrow, lab, client):
    with escrow.uow() as uow:
        reviewer = admin.create_token(uow, OPERATOR, "acme-ai", "reviewer", days=1)
    response = client.post("/api/v1/deposits", json={"model": "acme-ai/m", "version": "1"},
                           headers={"Authorization": f"Bearer {reviewer.token}"})
    assert response.status_code == 403
    assert "depositor" in response.json["detail"]
