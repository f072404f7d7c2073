"""Studies of live use on the pages, on SQLite and PostgreSQL: a person sees the approved
studies with what each captures, consents with the button (CSRF checked), sees the consent in
force on /me and withdraws it there (or on /studies); a proposed study is not offered and
refuses consent with its reason; the model's lab admins approve or reject proposed studies on
the lab's page, with a note, and nobody else can; on a study's own page its owner adds and
removes members and closes it, the lab's admin closes it, a member sees the team but no
buttons. (In Chromium:
tests/browser/test_studies_in_chromium.py.)"""

from __future__ import annotations

import re

import pytest

from broker import age

MODEL = "acme-ai/gpt-small"


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _register(client, rosa, name: str, title: str, purpose: str) -> str:
    made = client.post("/api/v1/studies", headers=rosa.login.auth, json={
        "model": MODEL, "name": name, "title": title, "purpose": purpose,
        "recipients": [str(age.generate_x25519_identity().to_recipient())]})
    assert made.status_code == 201, made.json
    return made.json["id"]


@pytest.fixture
def proposed(sealed, client, visitor) -> dict[str, str]:
    """Two studies of acme-ai/gpt-small registered by Rosa from her terminal, still proposed."""
    rosa = visitor("rosa@uni.example", "Rosa Franklin")
    return {
        "tutoring": _register(client, rosa, "tutoring", "Tutoring over a year",
                              "how people ask a retired model for help, over time"),
        "flattery": _register(client, rosa, "flattery", "Flattery in the wild",
                              "whether the model agrees too readily"),
    }


@pytest.fixture
def lab_admin(visitor):
    return visitor("ada@acme.example", "Ada Admin", (("acme-ai", "admin"),))


@pytest.fixture
def approved(proposed, client, lab_admin) -> dict[str, str]:
    """`tutoring` approved by the lab (its API), `flattery` still proposed."""
    done = client.post(f"/api/v1/studies/{proposed['tutoring']}/approve",
                       headers=lab_admin.login.auth, json={})
    assert done.status_code == 200, done.json
    return proposed


def _consenting(client, who, study: str) -> bool:
    return client.get(f"/api/v1/studies/{study}", headers=who.login.auth).json["consenting"]


def test_a_person_consents_sees_it_in_force_and_withdraws_it(approved, client, visitor):
    pat = visitor("pat@uni.example", "Pat Doe")
    study = approved["tutoring"]
    page = _text(pat.page("/studies"))
    for fact in ("Tutoring over a year", "tutoring", MODEL, "(every version)", "Rosa Franklin",
                 "how people ask a retired model for help, over time",
                 "The request and the answer text", "Encrypted to the team",
                 "Pseudonymous", "Withdraw any time"):
        assert fact in page, fact
    assert "Flattery in the wild" not in page  # proposed: not offered
    assert "rosa@uni.example" not in page  # the team by name; its email is not shown
    assert "None." in _text(pat.page("/me"))

    refused = pat.post(f"/studies/{study}/consent", csrf=False)
    assert refused.status_code == 403 and "csrf" in refused.get_data(as_text=True)
    assert not _consenting(client, pat, study)

    given = pat.post(f"/studies/{study}/consent")
    assert given.status_code == 303
    assert given.headers["Location"] == f"/studies?consented=tutoring#study-{study}"
    page = _text(pat.page("/studies?consented=tutoring"))
    assert "You consent to study Tutoring over a year" in page and "you consent" in page
    assert _consenting(client, pat, study)

    me = pat.page("/me")
    row = re.search(r'<tr id="consent-(sc_\w+)">(.*?)</tr>', me, re.S)
    consent_id, cells = row.group(1), row.group(2)
    assert "in force" in cells and f'action="/studies/{study}/withdraw"' in cells

    kept = pat.post(f"/studies/{study}/withdraw", {"back": "me"}, csrf=False)
    assert kept.status_code == 403 and _consenting(client, pat, study)

    ended = pat.post(f"/studies/{study}/withdraw", {"back": "me"})
    assert ended.status_code == 303
    assert ended.headers["Location"] == f"/me?withdrawn={consent_id}#studies"
    me = pat.page(f"/me?withdrawn={consent_id}")
    assert "You withdrew from study tutoring" in _text(me)
    cells = re.search(rf'<tr id="consent-{consent_id}">(.*?)</tr>', me, re.S).group(1)
    assert "withdrawn" in cells and "<form" not in cells
    assert not _consenting(client, pat, study)
    again = pat.post(f"/studies/{study}/withdraw", {"back": "me"})
    assert again.status_code == 404
    assert "you have no consent in force to study tutoring" in again.get_data(as_text=True)

    # from the page of studies too, and back to it
    assert pat.post(f"/studies/{study}/consent").status_code == 303
    back = pat.post(f"/studies/{study}/withdraw", {"back": "studies"})
    assert back.headers["Location"] == f"/studies?withdrawn=tutoring#study-{study}"
    assert "You withdrew from study Tutoring over a year" in _text(
        pat.page("/studies?withdrawn=tutoring"))
    assert not _consenting(client, pat, study)
    # a notice is said only of what happened: not for a consent in force, nor someone else's
    assert pat.post(f"/studies/{study}/consent").status_code == 303
    assert "You withdrew" not in pat.page("/studies?withdrawn=tutoring")
    assert "You withdrew" not in visitor("sam@uni.example").page(f"/me?withdrawn={consent_id}")


def test_a_proposed_study_refuses_consent_with_its_reason(approved, client, visitor):
    pat = visitor("pat@uni.example")
    refused = pat.post(f"/studies/{approved['flattery']}/consent")
    assert refused.status_code == 409
    text = _text(refused.get_data(as_text=True))
    assert "study flattery is proposed: only an approved study takes consent" in text
    assert "escrow study approve STUDY" in text
    assert "None." in _text(pat.page("/me"))
    missing = pat.post("/studies/st_0000000000000000/consent")
    assert missing.status_code == 404 and "no study st_0000000000000000" in _text(
        missing.get_data(as_text=True))
    assert visitor().post(f"/studies/{approved['tutoring']}/consent").status_code == 401


def test_the_labs_admins_approve_and_reject_proposed_studies(proposed, client, lab_admin,
                                                              visitor):
    assert "/lab/acme-ai/studies" in lab_admin.page("/lab")
    html = lab_admin.page("/lab/acme-ai/studies")
    for study in proposed.values():
        card = re.search(rf'<section class="card" id="study-{study}".*?</section>', html, re.S)
        assert card and "proposed" in card.group(0) and 'value="approve"' in card.group(0)
    page = _text(html)
    assert "Rosa Franklin · rosa@uni.example" in page
    assert "whether the model agrees too readily" in page

    for who in (visitor("rita@acme.example", org_roles=(("acme-ai", "reviewer"),)),
                visitor("olaf@other.example", org_roles=(("other-lab", "admin"),)),
                visitor("rosa@uni.example"),
                visitor("otto@escrow.example", global_roles=("operator",))):
        assert who.get("/lab/acme-ai/studies").status_code == 403
        # the owner and strangers are refused by the service too (a proposed study is not
        # shown to those who may not decide it)
        assert who.post(f"/lab/studies/{proposed['tutoring']}/decide",
                        {"decision": "approve"}).status_code in (403, 404)
    assert lab_admin.post(f"/lab/studies/{proposed['tutoring']}/decide",
                          {"decision": "approve"}, csrf=False).status_code == 403
    assert lab_admin.post(f"/lab/studies/{proposed['tutoring']}/decide",
                          {"decision": "maybe"}).status_code == 400
    assert client.get(f"/api/v1/studies/{proposed['tutoring']}",
                      headers=lab_admin.login.auth).json["state"] == "proposed"

    tutoring, flattery = proposed["tutoring"], proposed["flattery"]
    done = lab_admin.post(f"/lab/studies/{tutoring}/decide",
                          {"decision": "approve", "note": "fine by us"})
    assert done.status_code == 303
    assert done.headers["Location"] == f"/lab/acme-ai/studies?decided={tutoring}#study-{tutoring}"
    page = _text(lab_admin.page(f"/lab/acme-ai/studies?decided={tutoring}"))
    assert "Study Tutoring over a year is now approved" in page and "fine by us" in page
    rejected = lab_admin.post(f"/lab/studies/{flattery}/decide",
                              {"decision": "reject", "note": "too broad"})
    assert rejected.status_code == 303
    html = lab_admin.page("/lab/acme-ai/studies")
    for study, state, note in ((tutoring, "approved", "fine by us"),
                               (flattery, "rejected", "too broad")):
        card = re.search(rf'<section class="card" id="study-{study}".*?</section>', html,
                         re.S).group(0)
        assert state in card and note in card and "<form" not in card
        viewed = client.get(f"/api/v1/studies/{study}", headers=lab_admin.login.auth).json
        assert (viewed["state"], viewed["decision_note"]) == (state, note)
    again = lab_admin.post(f"/lab/studies/{flattery}/decide", {"decision": "approve"})
    assert again.status_code == 409 and "only a proposed study is decided" in again.get_data(
        as_text=True)

    offered = _text(visitor("pat@uni.example").page("/studies"))
    assert "Tutoring over a year" in offered and "Flattery in the wild" not in offered


def test_the_lab_listing_service_authorizes_itself(proposed, escrow, visitor):
    """Not only the page: the service refuses a person without the admin role there."""
    from broker.domain.principals import Principal, PrincipalKind
    from broker.errors import Forbidden
    from broker.services import studies

    olaf = visitor("olaf@other.example", org_roles=(("other-lab", "admin"),))
    person = Principal(kind=PrincipalKind.USER, id=str(olaf.login.user_id),
                       org_roles=frozenset({("other-lab", "admin"), ("acme-ai", "reviewer")}))
    with escrow.uow() as uow, pytest.raises(Forbidden):
        studies.org_studies(uow, person, "acme-ai")


def _card(html: str, section: str) -> str:
    found = re.search(rf'<section class="card" id="{section}".*?</section>', html, re.S)
    return found.group(0) if found else ""


def test_the_owner_manages_the_team_and_closes_the_study_on_its_page(approved, client,
                                                                     visitor):
    rosa = visitor("rosa@uni.example", "Rosa Franklin")
    sam = visitor("sam@uni.example", "Sam Team")
    pat = visitor("pat@uni.example", "Pat Doe")
    study, proposed = approved["tutoring"], approved["flattery"]
    members = f"/api/v1/studies/{study}/members"
    assert f'href="/studies/{study}"' in pat.page("/studies")

    html = rosa.page(f"/studies/{study}")
    page = _text(html)
    for fact in ("Tutoring over a year", "approved", MODEL, "Rosa Franklin",
                 "how people ask a retired model for help, over time",
                 "No members besides the owner"):
        assert fact in page, fact
    assert f'action="/studies/{study}/members"' in html
    assert f'action="/studies/{study}/close"' in html

    refused = rosa.post(f"/studies/{study}/members", {"email": "sam@uni.example"}, csrf=False)
    assert refused.status_code == 403 and "csrf" in refused.get_data(as_text=True)
    assert client.get(members, headers=rosa.login.auth).json["members"] == []
    added = rosa.post(f"/studies/{study}/members", {"email": "sam@uni.example"})
    assert added.status_code == 303
    sam_id = str(sam.login.user_id)
    assert added.headers["Location"] == f"/studies/{study}?added={sam_id}#team"
    html = rosa.page(f"/studies/{study}?added={sam_id}")
    assert "Sam Team is in the team now" in _text(html)
    assert f'action="/studies/{study}/members/{sam_id}/remove"' in _card(html, "team")
    again = rosa.post(f"/studies/{study}/members", {"email": "sam@uni.example"})
    assert again.headers["Location"] == f"/studies/{study}?added=already#team"
    assert "in the team already" in _text(rosa.page(f"/studies/{study}?added=already"))
    nobody = rosa.post(f"/studies/{study}/members", {"email": "nobody@uni.example"})
    assert nobody.status_code == 404
    assert rosa.post(f"/studies/{study}/members", {"email": ""}).status_code == 422

    # a member sees the page and the team, but no buttons
    html = sam.page(f"/studies/{study}")
    assert "Sam Team" in _card(html, "team") and "<form" not in html.split("<main", 1)[-1]
    assert client.get(f"/api/v1/studies/{study}/captures",
                      headers=sam.login.auth).status_code == 200
    for who in (sam, pat):  # neither may remove nor close
        assert who.post(f"/studies/{study}/members/{sam_id}/remove").status_code == 403
        assert who.post(f"/studies/{study}/close").status_code == 403
    # a stranger sees an approved study, not its team; a proposed one not at all
    html = pat.page(f"/studies/{study}")
    assert "Tutoring over a year" in html and 'id="team"' not in html
    assert "<form" not in html.split("<main", 1)[-1]
    assert pat.get(f"/studies/{proposed}").status_code == 404
    assert "Flattery in the wild" in rosa.page(f"/studies/{proposed}")

    kept = rosa.post(f"/studies/{study}/members/{sam_id}/remove", csrf=False)
    assert kept.status_code == 403
    assert len(client.get(members, headers=rosa.login.auth).json["members"]) == 1
    removed = rosa.post(f"/studies/{study}/members/{sam_id}/remove")
    assert removed.status_code == 303
    assert removed.headers["Location"] == f"/studies/{study}?removed={sam_id}#team"
    page = _text(rosa.page(f"/studies/{study}?removed={sam_id}"))
    assert f"User {sam_id} is no longer in the team" in page
    assert "No members besides the owner" in page
    assert client.get(f"/api/v1/studies/{study}/captures",
                      headers=sam.login.auth).status_code == 403
    assert 'id="team"' not in sam.page(f"/studies/{study}")
    again = rosa.post(f"/studies/{study}/members/{sam_id}/remove")
    assert again.status_code == 404 and "escrow study member list" in again.get_data(as_text=True)

    assert rosa.post(f"/studies/{study}/close", csrf=False).status_code == 403
    closed = rosa.post(f"/studies/{study}/close")
    assert closed.status_code == 303 and closed.headers["Location"] == f"/studies/{study}?closed=1"
    html = rosa.page(f"/studies/{study}?closed=1")
    assert "is closed: nothing more is captured" in _text(html)
    assert f'action="/studies/{study}/close"' not in html
    assert client.get(f"/api/v1/studies/{study}",
                      headers=rosa.login.auth).json["state"] == "closed"
    assert rosa.post(f"/studies/{study}/close").status_code == 409


def test_the_labs_admin_closes_a_study_on_its_page(approved, client, lab_admin, visitor):
    study = approved["tutoring"]
    html = lab_admin.page(f"/studies/{study}")
    assert f'action="/studies/{study}/close"' in html
    assert 'id="team"' not in html and f'action="/studies/{study}/members"' not in html
    assert "Flattery in the wild" in lab_admin.page(f"/studies/{approved['flattery']}")
    other = visitor("olaf@other.example", org_roles=(("other-lab", "admin"),))
    assert f'action="/studies/{study}/close"' not in other.page(f"/studies/{study}")
    assert other.post(f"/studies/{study}/close").status_code == 403
    closed = lab_admin.post(f"/studies/{study}/close")
    assert closed.status_code == 303
    assert "is closed" in _text(lab_admin.page(f"/studies/{study}?closed=1"))
    assert client.get(f"/api/v1/studies/{study}",
                      headers=lab_admin.login.auth).json["state"] == "closed"
    assert visitor().get(f"/studies/{study}").status_code == 302  # to the login page
