"""The operator's page: the parts' health and the deposits waiting for verification."""

from __future__ import annotations

from web.seed import deposit, depositor_token


def test_the_operator_sees_every_part_working(visitor):
    operator = visitor("otto@escrow.example", global_roles=("operator",))
    page = operator.page("/operator")
    for part in ("Database", "Object store", "Key custody"):
        assert f'<th scope="row">{part}</th>' in page
    assert page.count(">working</span>") == 3
    assert "Every part answers" in page


def test_a_deposit_waiting_for_verification_is_listed(visitor, escrow, client):
    made = deposit(client, escrow, depositor_token(escrow), seal=False)
    page = visitor("otto@escrow.example", global_roles=("operator",)).page("/operator")
    assert made["deposit_id"] in page
    assert ">verifying</span>" in page and ">queued</span>" in page


def test_a_failing_part_is_shown_and_answers_503(visitor, escrow, monkeypatch):
    def broken() -> str:
        raise OSError("disk gone")

    operator = visitor("otto@escrow.example", global_roles=("operator",))
    monkeypatch.setattr(operator.client.application.extensions["escrow"].store, "check", broken)
    response = operator.get("/operator")
    assert response.status_code == 503
    text = response.get_data(as_text=True)
    assert ">failing</span>" in text and "OSError" in text


def test_a_non_operator_gets_a_page_naming_the_global_role(visitor):
    for who in (visitor("rosa@uni.example"),
                visitor("audrey@audit.example", global_roles=("auditor",))):
        response = who.get("/operator")
        assert response.status_code == 403
        assert 'id="needed-role">the global role operator<' in response.get_data(as_text=True)


def test_without_a_login_the_operator_page_sends_you_to_log_in(visitor):
    response = visitor().get("/operator")
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login?next=/operator"
