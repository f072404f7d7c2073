"""The studies service on each kind of database (SQLite, PostgreSQL): who may decide and close,
consent and its withdrawal as `capturing` sees them, a capture's re-check of the consent, and
the daily count claimed once. (End to end through the broker and a model worker:
tests/hosted/test_studies.py.)"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from broker import age
from broker.domain import studies as domain
from broker.domain.principals import Principal, PrincipalKind
from broker.errors import Conflict, Forbidden, InvalidInput, NotFound


def _person(user_id: int, *org_roles: tuple[str, str]) -> Principal:
    return Principal(kind=PrincipalKind.USER, id=str(user_id), org_roles=frozenset(org_roles))


@pytest.fixture
def setting(escrow, make_person):
    """acme-ai/tiny with one version (a deposit row), its lab's admin, a researcher, a person."""
    from broker.adapters.db.models import Deposit, Model, Organisation

    admin = make_person("ada@acme.example", (("acme-ai", "admin"),))
    rosa = make_person("rosa@uni.example")
    pat = make_person("pat@uni.example")
    with escrow.uow() as uow:
        org = uow.session.query(Organisation).filter_by(name="acme-ai").one()
        model = Model(org_id=org.id, name="tiny")
        uow.session.add(model)
        uow.session.flush()
        uow.session.add(Deposit(id="d" * 32, model_id=model.id, version="1", state="sealed",
                                recipient="x", recipient_type="x25519", wrapped_identity=b"x",
                                created_by="test"))
        uow.commit()
    return (_person(admin.user_id, ("acme-ai", "admin")), _person(rosa.user_id),
            _person(pat.user_id))


def test_register_decide_consent_capture_withdraw_and_count(escrow, setting):
    from broker.services import studies, study_captures

    lab, rosa, pat = setting
    team = age.generate_x25519_identity()
    with escrow.uow() as uow:
        with pytest.raises(InvalidInput):
            studies.register(uow, rosa, "acme-ai/tiny", "s1", None, "why", ["not a key"])
        with pytest.raises(InvalidInput) as mixed:
            studies.register(uow, rosa, "acme-ai/tiny", "s1", None, "why",
                             [str(team.to_recipient()),
                              str(age.generate_hybrid_identity().to_recipient())])
        assert "age1pq1" in mixed.value.hint
        with pytest.raises(NotFound):
            studies.register(uow, rosa, "acme-ai/nope", "s1", None, "why",
                             [str(team.to_recipient())])
        made = studies.register(uow, rosa, "acme-ai/tiny", "s1", None, "why",
                                [str(team.to_recipient())])
        with pytest.raises(Conflict):
            studies.register(uow, rosa, "acme-ai/tiny", "s1", None, "why",
                             [str(team.to_recipient())])
    assert made["state"] == "proposed" and made["title"] == "s1"
    with escrow.uow() as uow:
        with pytest.raises(Forbidden):
            studies.decide(uow, rosa, "s1", "approve")  # the owner is not the lab
        with pytest.raises(NotFound):
            studies.show(uow, pat, "s1")  # proposed: not shown to others
        with pytest.raises(Conflict) as refused:
            studies.consent(uow, pat, "s1")
        assert "escrow study approve" in refused.value.hint
        assert studies.decide(uow, lab, "s1", "approve")["state"] == "approved"
        with pytest.raises(Conflict):
            studies.decide(uow, lab, "s1", "reject")  # decided already
        given = studies.consent(uow, pat, made["name"])
        assert studies.consent(uow, pat, "s1")["id"] == given["id"]  # once in force
        [target] = study_captures.capturing(uow, pat.id, "d" * 32)
        assert study_captures.capturing(uow, rosa.id, "d" * 32) == ()

    moment = datetime.now(UTC)
    answer = domain.answer_of_body(json.dumps(
        {"choices": [{"index": 0, "text": "fine", "finish_reason": "stop"}]}).encode())
    capture_id = study_captures.capture(
        escrow, target, model="acme-ai/tiny@1", endpoint="/v1/completions",
        request={"prompt": "secret words"}, answer=answer, started_at=moment, ended_at=moment)
    assert capture_id
    with escrow.uow() as uow:
        page = study_captures.list_captures(uow, rosa, "s1")
        assert [c["id"] for c in page["captures"]] == [capture_id] and page["next"] is None
        with pytest.raises(Forbidden):
            study_captures.list_captures(uow, pat, "s1")  # the owner's only
        url = study_captures.capture_url(escrow, uow, rosa, "s1", capture_id)
    data = escrow.store.get_bytes(domain.capture_key(made["id"], moment, capture_id))
    assert b"secret words" not in data and len(data) == url["size"]
    plain = io.BytesIO()
    age.decrypt(io.BytesIO(data), plain, [team])
    assert json.loads(plain.getvalue())["request"] == {"prompt": "secret words"}

    with escrow.uow() as uow:
        studies.withdraw(uow, pat, "s1")
        assert study_captures.capturing(uow, pat.id, "d" * 32) == ()
        with pytest.raises(NotFound):
            studies.withdraw(uow, pat, "s1")
    assert study_captures.capture(
        escrow, target, model="acme-ai/tiny@1", endpoint="/v1/completions", request={},
        answer=answer, started_at=moment, ended_at=moment) is None  # withdrawn meanwhile

    assert study_captures.report_due(escrow, moment) == 0
    assert study_captures.report_due(escrow, moment + timedelta(days=1)) == 1
    assert study_captures.report_due(escrow, moment + timedelta(days=2)) == 0

    with escrow.uow() as uow:
        with pytest.raises(Forbidden):
            studies.close(uow, pat, "s1")  # neither owner nor lab
        assert studies.close(uow, lab, "s1")["state"] == "closed"
        with pytest.raises(Conflict):
            studies.close(uow, rosa, "s1")


def test_the_owner_adds_members_who_list_and_fetch_the_captures(escrow, setting, make_person):
    from broker.adapters.db.models import AuditEvent
    from broker.services import studies, study_captures

    lab, rosa, pat = setting
    sam_login = make_person("sam@uni.example", name="Sam Team")
    sam = _person(sam_login.user_id)
    team = age.generate_x25519_identity()
    with escrow.uow() as uow:
        made = studies.register(uow, rosa, "acme-ai/tiny", "s2", None, "why",
                                [str(team.to_recipient())])
        with pytest.raises(NotFound):
            study_captures.list_captures(uow, sam, "s2")  # proposed: not shown to a stranger
        with pytest.raises(Forbidden):
            studies.add_member(uow, lab, "s2", "sam@uni.example")  # the lab is not the owner
        with pytest.raises(NotFound):
            studies.add_member(uow, rosa, "s2", "nobody@uni.example")
        with pytest.raises(InvalidInput):
            studies.add_member(uow, rosa, "s2", "")
        with pytest.raises(Conflict):
            studies.add_member(uow, rosa, "s2", rosa.id)  # the owner is in the team already
        added = studies.add_member(uow, rosa, "s2", "sam@uni.example")
        assert added["study_id"] == made["id"]
        assert [(m["user"], m["name"]) for m in added["members"]] == [(sam.id, "Sam Team")]
        again = studies.add_member(uow, rosa, "s2", sam.id)  # by user id: nothing changes
        assert again == added
        assert studies.show(uow, sam, "s2")["state"] == "proposed"  # a member sees it
        assert studies.list_members(uow, sam, "s2") == added
        with pytest.raises(Forbidden):
            studies.add_member(uow, sam, "s2", "pat@uni.example")  # the owner adds, only
        studies.decide(uow, lab, "s2", "approve")
        studies.consent(uow, pat, "s2")
        [target] = study_captures.capturing(uow, pat.id, "d" * 32)
        with pytest.raises(Forbidden):
            studies.list_members(uow, pat, "s2")  # not in the team
        events = uow.session.query(AuditEvent).filter_by(action="study.member_added").all()
        assert len(events) == 1

    moment = datetime.now(UTC)
    answer = domain.answer_of_body(json.dumps(
        {"choices": [{"index": 0, "text": "fine", "finish_reason": "stop"}]}).encode())
    capture_id = study_captures.capture(escrow, target, model="acme-ai/tiny@1",
                                 endpoint="/v1/completions", request={"prompt": "hello"},
                                 answer=answer, started_at=moment, ended_at=moment)
    with escrow.uow() as uow:
        for member in (rosa, sam):
            page = study_captures.list_captures(uow, member, "s2")
            assert [c["id"] for c in page["captures"]] == [capture_id]
            url = study_captures.capture_url(escrow, uow, member, "s2", capture_id)
            assert url["id"] == capture_id
        for outsider in (pat, lab):
            with pytest.raises(Forbidden) as refused:
                study_captures.list_captures(uow, outsider, "s2")
            assert "escrow study member add" in refused.value.hint
            with pytest.raises(Forbidden):
                study_captures.capture_url(escrow, uow, outsider, "s2", capture_id)

    # the owner removes Sam: from now on Sam neither lists nor fetches the captures
    with escrow.uow() as uow:
        with pytest.raises(Forbidden):
            studies.remove_member(uow, lab, "s2", sam.id)  # the lab is not the owner
        with pytest.raises(Forbidden):
            studies.remove_member(uow, sam, "s2", sam.id)  # the owner removes, only
        with pytest.raises(Conflict) as owner:
            studies.remove_member(uow, rosa, "s2", rosa.id)  # the owner stays
        assert "escrow study close" in owner.value.hint
        with pytest.raises(NotFound) as stranger:
            studies.remove_member(uow, rosa, "s2", "pat@uni.example")  # not a member
        assert "escrow study member list" in stranger.value.hint
        left = studies.remove_member(uow, rosa, "s2", "sam@uni.example")
        assert left == {"study_id": made["id"], "members": []}
        with pytest.raises(NotFound):
            studies.remove_member(uow, rosa, "s2", sam.id)  # removed already
        events = uow.session.query(AuditEvent).filter_by(action="study.member_removed").all()
        assert len(events) == 1
    with escrow.uow() as uow:
        with pytest.raises(Forbidden):
            study_captures.list_captures(uow, sam, "s2")
        with pytest.raises(Forbidden):
            study_captures.capture_url(escrow, uow, sam, "s2", capture_id)
        with pytest.raises(Forbidden):
            studies.list_members(uow, sam, "s2")
        assert [c["id"] for c in study_captures.list_captures(uow, rosa, "s2")["captures"]] == [
            capture_id]
