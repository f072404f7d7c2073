"""The researcher's own page lists every key registration and NDA signature."""

from datetime import UTC, datetime

from broker import age
from broker.domain.principals import OPERATOR
from broker.services import people, sessions


def logged_in(client, escrow) -> dict[str, str]:
    with escrow.uow() as uow:
        user = people.upsert_user(uow, OPERATOR, "https://idp.uni.example", "rosa",
                                  people.Claims(email="rosa@uni.example", email_verified=True,
                                                name="Rosa Franklin"))
        session = sessions.start_session(uow, user, "web", user.issuer, datetime.now(UTC))
        token = sessions.issue_tokens(uow, session).access_token
        uow.commit()
        session_id = session.id
    with client.session_transaction() as cookie:
        cookie["login_session"] = session_id
    return {"Authorization": f"Bearer {token}"}


def test_every_key_registration_shows_on_the_researchers_page(client, escrow):
    auth = logged_in(client, escrow)
    recipient = str(age.generate_hybrid_identity().to_recipient())
    registered = client.post("/api/v1/me/keys", headers=auth,
                             json={"recipient": recipient, "label": "laptop"})
    assert registered.status_code == 201, registered.json
    page = client.get("/me").get_data(as_text=True)
    assert "Rosa Franklin" in page
    assert registered.json["fingerprint"] in page
    assert "pending" in page
    assert "No keys yet" not in page


def test_the_page_without_a_login_sends_you_to_log_in(client):
    response = client.get("/me")
    assert response.status_code == 302
    assert "/auth/login" in response.headers["Location"]


def test_a_researcher_without_keys_is_told_to_make_one_with_escrow(client, escrow):
    logged_in(client, escrow)
    page = client.get("/me").get_data(as_text=True)
    assert "No keys yet" in page
    assert "escrow keys generate" in page  # a command that exists, whatever age is installed
    assert "escrow keys add --identity ~/.config/escrow/key.txt" in page


def test_the_page_lists_the_persons_study_consents_and_how_to_withdraw(client, escrow,
                                                                       make_person):
    from broker.adapters.db.models import Model, Organisation

    lab = make_person("ada@acme.example", (("acme-ai", "admin"),))
    with escrow.uow() as uow:
        org = uow.session.query(Organisation).filter_by(name="acme-ai").one()
        uow.session.add(Model(org_id=org.id, name="tiny"))
        uow.commit()
    made = client.post("/api/v1/studies", headers=lab.auth, json={
        "model": "acme-ai/tiny", "name": "tutoring-2027", "purpose": "how people ask",
        "recipients": [str(age.generate_x25519_identity().to_recipient())]})
    assert made.status_code == 201, made.json
    assert client.post("/api/v1/studies/tutoring-2027/approve", headers=lab.auth,
                       json={}).status_code == 200
    auth = logged_in(client, escrow)
    assert "escrow study consent STUDY" in client.get("/me").get_data(as_text=True)

    assert client.post("/api/v1/studies/tutoring-2027/consent", headers=auth).status_code == 200
    page = client.get("/me").get_data(as_text=True)
    assert "tutoring-2027" in page and "in force" in page
    withdraw = f'action="/studies/{made.json["id"]}/withdraw"'  # its button
    assert withdraw in page
    assert client.delete("/api/v1/studies/tutoring-2027/consent", headers=auth).status_code == 200
    page = client.get("/me").get_data(as_text=True)
    assert "withdrawn" in page and withdraw not in page
