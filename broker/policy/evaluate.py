"""Decide a request: `evaluate(policy, facts) -> Decision`. Pure: no Flask, no SQL, no clock.

Each requirement is one small check that, when unmet, adds what is missing (a short noun phrase)
and a reason (a sentence saying what to do). `eligible` is every requirement but approvals (it is
what lets reviewers approve); `allowed` is eligible and either auto-approval or enough approvals
from qualified reviewers, with no denial from a qualified reviewer.

A qualified reviewer holds the policy's role in the owning organisation (or a role that includes
it: an admin counts as a reviewer, domain.principals.ROLE_INCLUDES), is not the requester,
and (unless the policy allows it) belongs to none of the requester's organisations: colleagues
must not wave each other through. Approvals from anyone else do not count, and the reasons say
why, so that `--explain` shows it. Each reviewer counts once. A qualified denial refuses the
request even when approvals suffice or the policy approves automatically; the researcher may ask
again with a new request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from broker.domain.hosting import RELEASING_KINDS
from broker.domain.nda import version_key
from broker.domain.principals import counts_as, roles_counting_as
from broker.errors import EscrowError, InvalidInput
from broker.policy.facts import ApprovalFact, Decision, Facts
from broker.policy.schema import Policy


@dataclass
class _Findings:
    missing: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def unmet(self, missing: str, reason: str) -> None:
        self.missing.append(missing)
        self.reasons.append(reason)


def evaluate(policy: Policy, facts: Facts) -> Decision:
    if not policy.covers(facts.model):
        # A programming error, not a refusal: the caller matched the wrong policy.
        raise EscrowError(
            f"policy {policy.id} does not cover model {facts.model}",
            hint="choose the policy with PolicySet.match(model)",
        )
    eligibility = _Findings()
    _check_kind(policy, facts, eligibility)
    _check_embargo(policy, facts, eligibility)
    _check_nda(policy, facts, eligibility)
    _check_email(policy, facts, eligibility)
    _check_affiliation(policy, facts, eligibility)
    _check_key(policy, facts, eligibility)
    _check_closeouts(policy, facts, eligibility)
    eligible = not eligibility.missing

    approvals = _Findings()
    approved = _check_approvals(policy, facts, approvals)

    grant_days, clamped = _grant_days(policy, facts.requested_days)
    allowed = eligible and approved
    reasons = eligibility.reasons + approvals.reasons
    if clamped:
        reasons.append(
            f"you asked for {facts.requested_days} days but policy {policy.id} "
            f"allows at most {policy.grant.max_days}: the grant would last "
            f"{grant_days} days"
        )
    if allowed:
        reasons.insert(0, f"every requirement of policy {policy.id} is met for {facts.model}")
    return Decision(
        allowed=allowed,
        eligible=eligible,
        missing=tuple(eligibility.missing + approvals.missing),
        reasons=tuple(reasons),
        grant_days=grant_days,
        clamped=clamped,
        policy_id=policy.id,
        policy_sha256=policy.sha256,
    )


# --- eligibility ---------------------------------------------------------------------------------


def _check_kind(policy: Policy, facts: Facts, found: _Findings) -> None:
    if facts.kind in policy.access:
        return
    found.unmet(
        f"a policy allowing {facts.kind} access to {facts.model}",
        f"Policy {policy.id} allows {' and '.join(policy.access)} access to {facts.model}, "
        f"not {facts.kind}; ask for a kind it allows (--kind {policy.access[0]})",
    )


def _check_embargo(policy: Policy, facts: Facts, found: _Findings) -> None:
    if policy.embargo_until is None:
        return
    lifted = datetime(
        policy.embargo_until.year, policy.embargo_until.month, policy.embargo_until.day, tzinfo=UTC
    )
    now = facts.now if facts.now.tzinfo else facts.now.replace(tzinfo=UTC)
    if now < lifted:
        day = policy.embargo_until.isoformat()
        found.unmet(
            f"the embargo on {facts.model} to end on {day}",
            f"{facts.model} is under embargo until {day} (UTC): no request can be "
            f"granted before then; ask again on or after {day}",
        )


def _check_nda(policy: Policy, facts: Facts, found: _Findings) -> None:
    nda = policy.nda
    if nda is None:
        return
    minimum = version_key(nda.min_version)
    signed = facts.signed_ndas.get(nda.id, ())
    if any(version_key(version) >= minimum for version in signed):
        return
    action = f"sign the NDA {nda.id} version {nda.min_version} or later: escrow nda sign {nda.id}"
    if signed:
        latest = max(signed, key=version_key)
        found.unmet(
            f"a signature of NDA {nda.id} version {nda.min_version} or later",
            f"you signed NDA {nda.id} version {latest} only; {action}",
        )
    else:
        found.unmet(
            f"a signature of NDA {nda.id} version {nda.min_version} or later",
            action[0].upper() + action[1:],
        )


def _check_email(policy: Policy, facts: Facts, found: _Findings) -> None:
    rules = policy.eligibility
    verified = bool(facts.email and facts.email_verified)
    if rules.verified_email and not verified:
        found.unmet(
            "a verified email address",
            "Log in with an identity provider that verifies your email address "
            "(escrow login), so that the broker holds a verified email for you",
        )
    if not rules.email_domains:
        return
    domain = facts.email.rsplit("@", 1)[-1].lower() if facts.email else ""
    wanted = " or ".join(rules.email_domains)
    if not verified:
        # A domain requirement is only met by an email the issuer vouched for.
        found.unmet(
            f"a verified email address at {wanted}",
            f"Policy {policy.id} admits verified email addresses at {wanted} only; log "
            f"in with an identity provider that verifies such an address",
        )
    elif not any(_domain_matches(rule, domain) for rule in rules.email_domains):
        found.unmet(
            f"an email address at {wanted}",
            f"Your verified email is at {domain}, but policy {policy.id} admits {wanted} "
            f"only; log in with an account at one of those domains",
        )


def _domain_matches(rule: str, domain: str) -> bool:
    if rule.startswith("*."):
        return domain.endswith(rule[1:])  # subdomains only: ".uni.example"
    return domain == rule


def _check_affiliation(policy: Policy, facts: Facts, found: _Findings) -> None:
    wanted = policy.eligibility.affiliations
    if not wanted:
        return
    mine = [value.lower() for value in facts.affiliations]
    if any(_affiliation_matches(rule, value) for rule in wanted for value in mine):
        return
    names = " or ".join(wanted)
    have = f"your affiliations are {', '.join(mine)}" if mine else "you have no affiliation"
    found.unmet(
        f"an affiliation {names}",
        f"Policy {policy.id} admits researchers affiliated as {names}, and {have} on "
        f"record; log in with your institution's identity provider so that it states "
        f"your affiliation",
    )


def _affiliation_matches(rule: str, value: str) -> bool:
    role, _, scope = rule.partition("@")
    their_role, at, their_scope = value.partition("@")
    return bool(at) and scope == their_scope and role in ("*", their_role)


def _check_key(policy: Policy, facts: Facts, found: _Findings) -> None:
    """The key requirements (`eligibility.proven_key`, `require_post_quantum_key`) are about
    the key file keys are released to: they apply to weights only. Hosted access (inference,
    internals) releases no key, so a person who registered none may have it."""
    if facts.kind not in RELEASING_KINDS:
        return
    if policy.require_post_quantum_key:
        if not any(key.post_quantum for key in facts.keys):
            found.unmet(
                "a proven post-quantum key",
                f"Policy {policy.id} requires a post-quantum hybrid key "
                f"(mlkem768x25519); make one and register it: escrow keys generate "
                f"--post-quantum, then escrow keys add --identity ~/.config/escrow/key.txt",
            )
    elif policy.eligibility.proven_key and not facts.keys:
        found.unmet(
            "a proven key",
            "Make a key and prove you hold it: escrow keys generate, then "
            "escrow keys add --identity ~/.config/escrow/key.txt",
        )


def _check_closeouts(policy: Policy, facts: Facts, found: _Findings) -> None:
    """No new grant while a grant of the requester ended `overdue_after_days` ago or more and
    still waits for its close-out (the grants are not named: reviewers read these reasons)."""
    rule = policy.requires
    if not rule.no_overdue_closeouts:
        return
    now = facts.now if facts.now.tzinfo else facts.now.replace(tzinfo=UTC)
    late = timedelta(days=rule.overdue_after_days)
    overdue = sum(1 for ended in facts.closeouts_due if now >= _aware(ended) + late)
    if not overdue:
        return
    found.unmet(
        "a close-out of every grant that ended",
        f"Policy {policy.id} grants nothing while a grant of yours ended "
        f"{rule.overdue_after_days} days ago or more without a close-out ({overdue} such "
        "grant(s)): delete the weights and attest it, for each grant listed as due by "
        'escrow grants: escrow grants close GRANT --attest-deleted --name "Full Name"',
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- approvals -----------------------------------------------------------------------------------


def _check_approvals(policy: Policy, facts: Facts, found: _Findings) -> bool:
    """True when approvals do not stand in the way (auto or enough), and no qualified denial."""
    rule = policy.approvals
    approvers: set[str] = set()
    deniers: set[str] = set()
    for approval in facts.approvals:
        why_not = review_disqualified(policy, facts, approval)
        if why_not:
            verb = "approval" if approval.approve else "denial"
            found.reasons.append(f"The {verb} by {approval.reviewer_id} does not count: {why_not}")
        elif approval.approve:
            approvers.add(approval.reviewer_id)
        else:
            deniers.add(approval.reviewer_id)
    if deniers:
        found.unmet(
            "a new request: this one was denied",
            f"Denied by {', '.join(sorted(deniers))}, a {rule.role} of "
            f"{policy.organisation}; you may ask again with a new request "
            f"(escrow request {facts.model} …)",
        )
        return False
    if rule.auto:
        found.reasons.append(f"Policy {policy.id} approves eligible requests automatically")
        return True
    if len(approvers) >= rule.count:
        found.reasons.append(
            f"Approved by {len(approvers)} of the {rule.count} {rule.role}(s) "
            f"of {policy.organisation} required"
        )
        return True
    needed = rule.count - len(approvers)
    who = a(describe_role(rule.role))
    found.unmet(
        f"{needed} more approval{'s' if needed > 1 else ''} from {who} of "
        f"{policy.organisation}",
        f"Policy {policy.id} needs {rule.count} approval{'s' if rule.count > 1 else ''} "
        f"from {who} of {policy.organisation}"
        + ("" if rule.allow_requester_org else " outside your own organisations")
        + f"; it has {len(approvers)}: wait for {who} to review the request",
    )
    return False


def review_disqualified(policy: Policy, facts: Facts, approval: ApprovalFact) -> str | None:
    """Why this review cannot count under the policy (None: it counts). A review counts under
    the role the policy asks for when the reviewer holds it or a role that includes it (an
    admin counts as a reviewer: domain.principals.ROLE_INCLUDES)."""
    rule = policy.approvals
    if approval.reviewer_id == facts.requester_id:
        return "nobody may review their own request"
    if not counts_as(approval.reviewer_roles, rule.role):
        return f"they are not {a(describe_role(rule.role))} of {policy.organisation}"
    if not rule.allow_requester_org and approval.reviewer_orgs & facts.requester_orgs:
        shared = ", ".join(sorted(approval.reviewer_orgs & facts.requester_orgs))
        return (
            f"they are a member of your own organisation ({shared}), and policy "
            f"{policy.id} asks for reviewers from outside it"
        )
    return None


def a(noun: str) -> str:
    """'a reviewer', 'an admin'."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def describe_role(role: str) -> str:
    """'reviewer (or admin)': the policy's role and the roles that count as it."""
    others = [r for r in roles_counting_as(role) if r != role]
    return f"{role} (or {' or '.join(others)})" if others else role


# --- duration ------------------------------------------------------------------------------------


def _grant_days(policy: Policy, requested: int | None) -> tuple[int, bool]:
    if requested is None:
        return policy.grant.default_days, False
    if requested < 1:
        raise InvalidInput(
            f"requested duration {requested} days is not valid",
            hint=f"ask for 1 to {policy.grant.max_days} days, or leave it out "
            f"for the default ({policy.grant.default_days})",
        )
    if requested > policy.grant.max_days:
        return policy.grant.max_days, True
    return requested, False
