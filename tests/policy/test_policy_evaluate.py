"""Evaluating a request against a policy: each requirement met or unmet, with its reason. Pure."""

import dataclasses
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from broker.errors import EscrowError, InvalidInput
from broker.policy.evaluate import evaluate
from broker.policy.facts import ApprovalFact, Facts, KeyFact
from broker.policy.schema import Approvals, Eligibility, parse_policy

from .conftest import GOOD

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PQ_KEY = KeyFact("k1", "mlkem768x25519", post_quantum=True)
X25519_KEY = KeyFact("k2", "x25519", post_quantum=False)


def reviewer(rid="rev", roles=("reviewer",), orgs=("acme-ai",), approve=True):
    return ApprovalFact(rid, frozenset(roles), frozenset(orgs), approve)


def make_policy(**changes):
    policy, problems = parse_policy(GOOD.encode(), Path("acme-ai.yaml"))
    assert not problems
    return dataclasses.replace(policy, **changes)


def make_facts(**changes):
    base = Facts(
        model="acme-ai/gpt-small",
        now=NOW,
        requester_id="ada",
        email="ada@uni.example",
        email_verified=True,
        affiliations=("faculty@uni.example",),
        requester_orgs=frozenset({"uni-lab"}),
        signed_ndas={"acme-research-nda": ("1",)},
        keys=(PQ_KEY,),
        approvals=(reviewer(),),
    )
    return dataclasses.replace(base, **changes)


def eligibility(**changes):
    return dataclasses.replace(Eligibility(), **changes)


def approvals(**changes):
    return dataclasses.replace(Approvals(count=1), **changes)


def test_a_request_meeting_every_requirement_is_allowed_and_names_the_policy():
    policy = make_policy()
    decision = evaluate(policy, make_facts())
    assert decision.allowed and decision.eligible and decision.missing == ()
    assert (decision.policy_id, decision.policy_sha256) == ("acme-ai", policy.sha256)
    assert (decision.grant_days, decision.clamped) == (14, False)
    assert "every requirement of policy acme-ai is met" in decision.reasons[0]


# --- eligibility ---------------------------------------------------------------------------------


def test_an_unsigned_nda_is_missing_and_the_reason_says_how_to_sign():
    decision = evaluate(make_policy(), make_facts(signed_ndas={}))
    assert not decision.allowed and not decision.eligible
    assert decision.missing == ("a signature of NDA acme-research-nda version 1 or later",)
    assert ("Sign the NDA acme-research-nda version 1 or later: escrow nda sign "
            "acme-research-nda") in decision.reasons


def test_nda_versions_compare_in_natural_order():
    policy = make_policy(nda=dataclasses.replace(make_policy().nda, min_version="1.9"))
    assert evaluate(policy, make_facts(signed_ndas={"acme-research-nda": ("1.10",)})).eligible
    old = evaluate(policy, make_facts(signed_ndas={"acme-research-nda": ("1.2", "1.8")}))
    assert not old.eligible
    assert any(r.startswith("you signed NDA acme-research-nda version 1.8 only; sign the NDA "
                            "acme-research-nda version 1.9 or later") for r in old.reasons)


def test_another_ndas_signature_does_not_count():
    decision = evaluate(make_policy(), make_facts(signed_ndas={"other-nda": ("5",)}))
    assert not decision.eligible


def test_a_policy_without_nda_needs_no_signature():
    assert evaluate(make_policy(nda=None), make_facts(signed_ndas={})).allowed


@pytest.mark.parametrize("email, verified", [(None, False), ("ada@uni.example", False)])
def test_an_unverified_email_is_missing_when_required(email, verified):
    decision = evaluate(make_policy(), make_facts(email=email, email_verified=verified))
    assert decision.missing == ("a verified email address",)
    assert "verifies your email address (escrow login)" in decision.reasons[0]
    loose = make_policy(eligibility=eligibility(verified_email=False))
    assert evaluate(loose, make_facts(email=email, email_verified=verified)).allowed


@pytest.mark.parametrize("domains, email, ok", [
    (("uni.example",), "ada@uni.example", True),
    (("uni.example",), "ada@UNI.example", True),
    (("uni.example",), "ada@cs.uni.example", False),
    (("*.uni.example",), "ada@cs.uni.example", True),
    (("*.uni.example",), "ada@uni.example", False),
    (("*.uni.example",), "ada@evil-uni.example", False),
    (("other.example", "uni.example"), "ada@uni.example", True),
    (("uni.example",), "ada@gmail.example", False),
])
def test_email_domains(domains, email, ok):
    policy = make_policy(eligibility=eligibility(email_domains=domains))
    decision = evaluate(policy, make_facts(email=email))
    assert decision.eligible is ok
    if not ok:
        assert decision.missing == (f"an email address at {' or '.join(domains)}",)
        assert "log in with an account at one of those domains" in decision.reasons[0]


def test_an_email_domain_is_only_met_by_a_verified_email():
    policy = make_policy(eligibility=eligibility(verified_email=False,
                                                 email_domains=("uni.example",)))
    decision = evaluate(policy, make_facts(email_verified=False))
    assert decision.missing == ("a verified email address at uni.example",)


@pytest.mark.parametrize("wanted, mine, ok", [
    (("faculty@uni.example",), ("faculty@uni.example",), True),
    (("faculty@uni.example",), ("student@uni.example",), False),
    (("faculty@uni.example",), ("faculty@other.example",), False),
    (("*@uni.example",), ("student@uni.example",), True),
    (("*@uni.example",), ("student@cs.uni.example",), False),
    (("*@uni.example",), (), False),
    (("staff@uni.example", "faculty@uni.example"), ("member@x.example", "Faculty@uni.example"),
     True),
])
def test_affiliations(wanted, mine, ok):
    policy = make_policy(eligibility=eligibility(affiliations=wanted))
    decision = evaluate(policy, make_facts(affiliations=mine))
    assert decision.eligible is ok
    if not ok:
        assert decision.missing == (f"an affiliation {' or '.join(wanted)}",)
        assert "log in with your institution's identity provider" in decision.reasons[0]


def test_a_proven_key_is_required():
    policy = make_policy(require_post_quantum_key=False)
    decision = evaluate(policy, make_facts(keys=()))
    assert decision.missing == ("a proven key",)
    assert "escrow keys add" in decision.reasons[0]
    assert evaluate(policy, make_facts(keys=(X25519_KEY,))).allowed
    no_key_needed = make_policy(require_post_quantum_key=False,
                                eligibility=eligibility(proven_key=False))
    assert evaluate(no_key_needed, make_facts(keys=())).allowed


def test_a_post_quantum_key_is_required_when_the_policy_says_so():
    policy = make_policy()
    assert policy.require_post_quantum_key
    decision = evaluate(policy, make_facts(keys=(X25519_KEY,)))
    assert decision.missing == ("a proven post-quantum key",)
    assert "post-quantum hybrid key (mlkem768x25519)" in decision.reasons[0]
    assert evaluate(policy, make_facts(keys=(X25519_KEY, PQ_KEY))).allowed


def test_an_embargo_refuses_until_the_day_it_ends():
    policy = make_policy(embargo_until=date(2025, 3, 2))
    decision = evaluate(policy, make_facts())
    assert not decision.allowed and not decision.eligible
    assert decision.missing == ("the embargo on acme-ai/gpt-small to end on 2025-03-02",)
    assert "under embargo until 2025-03-02 (UTC)" in decision.reasons[0]
    at_midnight = datetime(2025, 3, 2, tzinfo=UTC)
    assert evaluate(policy, make_facts(now=at_midnight)).allowed
    assert evaluate(policy, make_facts(now=datetime(2025, 3, 2, 0, 0))).allowed  # naive = UTC


def test_every_unmet_requirement_is_listed_not_only_the_first():
    decision = evaluate(make_policy(embargo_until=date(2030, 1, 1)),
                        make_facts(signed_ndas={}, email_verified=False, keys=(), approvals=()))
    assert len(decision.missing) == 5 and len(decision.reasons) >= 5


# --- approvals -----------------------------------------------------------------------------------


def test_without_approvals_an_eligible_request_waits_for_a_reviewer():
    decision = evaluate(make_policy(), make_facts(approvals=()))
    assert decision.eligible and not decision.allowed
    assert decision.missing == ("1 more approval from a reviewer (or admin) of acme-ai",)
    assert "wait for a reviewer (or admin) to review the request" in decision.reasons[0]


def test_approvals_count_distinct_qualified_reviewers():
    policy = make_policy(approvals=approvals(count=2))
    twice = make_facts(approvals=(reviewer("r1"), reviewer("r1")))
    assert not evaluate(policy, twice).allowed
    assert evaluate(policy, make_facts(approvals=(reviewer("r1"), reviewer("r2")))).allowed


def test_an_approval_from_the_wrong_role_does_not_count():
    facts = make_facts(approvals=(reviewer(roles=("depositor",)),))
    decision = evaluate(make_policy(), facts)
    assert not decision.allowed
    assert ("The approval by rev does not count: they are not a reviewer (or admin) of "
            "acme-ai") in decision.reasons
    admins = make_policy(approvals=approvals(role="admin"))
    assert evaluate(admins, make_facts(approvals=(reviewer(roles=("admin",)),))).allowed


def test_an_admin_counts_as_a_reviewer_but_a_reviewer_not_as_an_admin():
    # issue 15: the README's bootstrap grants `admin`; that admin's approval must count
    assert evaluate(make_policy(), make_facts(approvals=(reviewer(roles=("admin",)),))).allowed
    admins = make_policy(approvals=approvals(role="admin"))
    decision = evaluate(admins, make_facts(approvals=(reviewer(roles=("reviewer",)),)))
    assert not decision.allowed
    assert "The approval by rev does not count: they are not an admin of acme-ai" in (
        decision.reasons)


def test_the_requester_cannot_approve_their_own_request():
    facts = make_facts(approvals=(reviewer("ada"),))
    decision = evaluate(make_policy(), facts)
    assert not decision.allowed
    assert "The approval by ada does not count: nobody may review their own request" in (
        decision.reasons)


def test_reviewers_from_the_requesters_own_organisation_count_only_when_allowed():
    colleague = reviewer(orgs=("acme-ai", "uni-lab"))
    facts = make_facts(approvals=(colleague,))
    refused = evaluate(make_policy(), facts)
    assert not refused.allowed
    assert any("member of your own organisation (uni-lab)" in r for r in refused.reasons)
    allowed = make_policy(approvals=approvals(allow_requester_org=True))
    assert evaluate(allowed, facts).allowed


def test_a_denial_by_a_qualified_reviewer_refuses_even_with_enough_approvals():
    facts = make_facts(approvals=(reviewer("r1"), reviewer("r2", approve=False)))
    decision = evaluate(make_policy(), facts)
    assert decision.eligible and not decision.allowed
    assert decision.missing == ("a new request: this one was denied",)
    assert any(r.startswith("Denied by r2, a reviewer of acme-ai; you may ask again")
               for r in decision.reasons)


def test_a_denial_by_someone_unqualified_is_ignored_and_said_so():
    facts = make_facts(approvals=(reviewer("r1"), reviewer("x", roles=(), approve=False)))
    decision = evaluate(make_policy(), facts)
    assert decision.allowed
    assert ("The denial by x does not count: they are not a reviewer (or admin) of "
            "acme-ai") in decision.reasons


def test_auto_approval_allows_an_eligible_request_without_reviewers():
    policy = make_policy(approvals=approvals(count=0, auto=True))
    decision = evaluate(policy, make_facts(approvals=()))
    assert decision.allowed
    assert "Policy acme-ai approves eligible requests automatically" in decision.reasons
    assert not evaluate(policy, make_facts(approvals=(), keys=())).allowed
    denied = evaluate(policy, make_facts(approvals=(reviewer(approve=False),)))
    assert not denied.allowed


# --- duration ------------------------------------------------------------------------------------


@pytest.mark.parametrize("requested, days, clamped", [
    (None, 14, False), (1, 1, False), (30, 30, False), (31, 30, True), (365, 30, True),
])
def test_the_grant_duration_is_the_request_clamped_to_the_longest(requested, days, clamped):
    decision = evaluate(make_policy(), make_facts(requested_days=requested))
    assert (decision.grant_days, decision.clamped) == (days, clamped)
    assert decision.allowed  # clamping is said, not a refusal
    if clamped:
        assert (f"you asked for {requested} days but policy acme-ai allows at most 30: the "
                "grant would last 30 days") in decision.reasons


def test_a_duration_below_one_day_is_invalid_input():
    with pytest.raises(InvalidInput):
        evaluate(make_policy(), make_facts(requested_days=0))


def test_evaluating_a_policy_that_does_not_cover_the_model_is_a_bug_not_a_decision():
    with pytest.raises(EscrowError, match="does not cover model beta-lab/x"):
        evaluate(make_policy(), make_facts(model="beta-lab/x"))


# --- close-outs ----------------------------------------------------------------------------------


def test_an_overdue_close_out_refuses_only_under_a_policy_that_requires_it():
    from datetime import timedelta

    from broker.policy.schema import Requires

    ended = NOW - timedelta(days=14)
    strict = make_policy(requires=Requires(no_overdue_closeouts=True, overdue_after_days=14))
    overdue = evaluate(strict, make_facts(closeouts_due=(ended,)))
    assert not overdue.eligible
    assert overdue.missing == ("a close-out of every grant that ended",)
    assert "escrow grants close" in overdue.reasons[0] and "(1 such grant(s))" in overdue.reasons[0]
    # a day less: due, not overdue
    assert evaluate(strict, make_facts(closeouts_due=(ended + timedelta(days=1),))).allowed
    assert evaluate(make_policy(), make_facts(closeouts_due=(ended,))).allowed


def test_requires_is_read_with_its_defaults_and_checked():
    policy, problems = parse_policy(
        (GOOD + "requires: {no_overdue_closeouts: true}\n").encode(), Path("acme-ai.yaml")
    )
    assert not problems and policy.requires.no_overdue_closeouts
    assert policy.requires.overdue_after_days == 14
    _, problems = parse_policy(
        (GOOD + "requires: {no_overdue_closeouts: yes-please}\n").encode(), Path("acme-ai.yaml")
    )
    assert problems and "no_overdue_closeouts" in problems[0].message
