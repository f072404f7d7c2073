"""Release agreements, evaluated: which trigger is met on the facts handed in and what each one
still misses, whether an amendment is allowed, the agreement in words, and the policy a
`public` release decides requests under. Pure: no clock, no database, no Flask here (the
format and its reader: `broker.policy.agreement`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.policy.agreement import (
    PUBLIC,
    Agreement,
    AllOf,
    AnyOf,
    Condition,
    LabRelease,
    LabSilence,
    OnOrAfter,
    TrusteeVote,
)
from broker.policy.schema import Approvals, Eligibility, GrantLimits, Policy

# --- evaluating --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgreementFacts:
    """What an agreement is decided on, gathered by the services."""

    now: datetime
    silent_since: datetime  # the lab's last check-in, or when the agreement was attached
    votes: frozenset[str] = frozenset()  # e-mail addresses of trustees voting now (not withdrawn)
    lab_released: bool = False
    lab_admin: bool = False  # amendments: the lab's admin proposes it


@dataclass(frozen=True)
class TriggerState:
    name: str
    unlocks: str
    met: bool
    missing: tuple[str, ...]  # what is still needed, in words (empty when met)
    reasons: tuple[str, ...]  # why, in words


@dataclass(frozen=True)
class AgreementDecision:
    released: bool
    trigger: str | None  # the first trigger met, in the file's order
    unlocks: str | None
    triggers: tuple[TriggerState, ...]


@dataclass(frozen=True)
class AmendmentDecision:
    allowed: bool
    missing: tuple[str, ...]
    reasons: tuple[str, ...]


def evaluate_agreement(agreement: Agreement, facts: AgreementFacts) -> AgreementDecision:
    """Which trigger (if any) is met now, and for each one what is still missing."""
    states = []
    for trigger in agreement.triggers:
        met, missing, reasons = _check(trigger.when, agreement, facts)
        states.append(TriggerState(trigger.name, trigger.unlocks, met, missing, reasons))
    first = next((s for s in states if s.met), None)
    return AgreementDecision(
        released=first is not None,
        trigger=first.name if first else None,
        unlocks=first.unlocks if first else None,
        triggers=tuple(states),
    )


def evaluate_amendment(agreement: Agreement, facts: AgreementFacts) -> AmendmentDecision:
    """Whether the agreement's own amendment rule allows replacing it, with `facts.votes` the
    trustees who voted for this very amendment."""
    met, missing, reasons = _check(agreement.amendment, agreement, facts)
    return AmendmentDecision(met, missing, reasons)


_Result = tuple[bool, tuple[str, ...], tuple[str, ...]]


def _check(condition: Condition, agreement: Agreement, facts: AgreementFacts) -> _Result:
    if isinstance(condition, AllOf | AnyOf):
        return _check_group(condition, agreement, facts)
    if isinstance(condition, OnOrAfter):
        return _check_date(condition, facts)
    if isinstance(condition, LabSilence):
        return _check_silence(condition, facts)
    if isinstance(condition, TrusteeVote):
        return _check_votes(condition, agreement, facts)
    if isinstance(condition, LabRelease):
        if facts.lab_released:
            return True, (), ("the lab's admin released it early",)
        return False, ("the lab's admin releasing it early",), ("the lab has not released it",)
    if facts.lab_admin:
        return True, (), ("proposed by the lab's admin",)
    return False, ("the lab's admin proposing it",), ("not proposed by the lab's admin",)


def _check_group(condition: AllOf | AnyOf, agreement: Agreement, facts: AgreementFacts) -> _Result:
    results = [_check(part, agreement, facts) for part in condition.parts]
    reasons = tuple(r for result in results for r in result[2])
    if isinstance(condition, AllOf):
        met = all(result[0] for result in results)
        missing = tuple(m for result in results if not result[0] for m in result[1])
        return met, missing, reasons
    if any(result[0] for result in results):
        return True, (), reasons
    return False, ("one of: " + " | ".join("; ".join(r[1]) for r in results),), reasons


def _check_date(condition: OnOrAfter, facts: AgreementFacts) -> _Result:
    start = datetime(condition.day.year, condition.day.month, condition.day.day, tzinfo=UTC)
    if facts.now >= start:
        return True, (), (f"the date {condition.day.isoformat()} has come",)
    days = (start - facts.now + timedelta(hours=23, minutes=59, seconds=59)).days
    return (
        False,
        (f"the date {condition.day.isoformat()} (in {_days(days)})",),
        (f"the date {condition.day.isoformat()} has not come yet",),
    )


def _check_silence(condition: LabSilence, facts: AgreementFacts) -> _Result:
    silent = facts.now - facts.silent_since
    due = facts.silent_since + timedelta(days=condition.days)
    since = facts.silent_since.isoformat(timespec="seconds")
    if facts.now >= due:
        return True, (), (f"the lab has not checked in since {since} ({_days(silent.days)})",)
    return (
        False,
        (
            f"the lab silent for {_days(condition.days)} (silent {_days(silent.days)} "
            f"so far, since {since}; met at {due.isoformat(timespec='seconds')} "
            "unless it checks in)",
        ),
        (f"the lab checked in or began its agreement at {since}",),
    )


def _check_votes(condition: TrusteeVote, agreement: Agreement, facts: AgreementFacts) -> _Result:
    counted = sorted(facts.votes & set(agreement.trustees))
    if len(counted) >= condition.count:
        voted = f"{len(counted)} of {len(agreement.trustees)} trustees voted: " + ", ".join(counted)
        return True, (), (voted,)
    waiting = [t for t in agreement.trustees if t not in counted]
    more = condition.count - len(counted)
    return (
        False,
        (f"{more} more trustee vote{'s' if more != 1 else ''} (of {', '.join(waiting)})",),
        (f"{len(counted)} of the {condition.count} trustee votes needed",),
    )


def _days(count: int) -> str:
    return f"{count} day{'s' if count != 1 else ''}"


# --- in words ----------------------------------------------------------------------------------


def condition_words(condition: Condition) -> str:
    if isinstance(condition, AllOf | AnyOf):
        joiner = " AND " if isinstance(condition, AllOf) else " OR "
        return "(" + joiner.join(condition_words(p) for p in condition.parts) + ")"
    if isinstance(condition, OnOrAfter):
        return f"on or after {condition.day.isoformat()}"
    if isinstance(condition, LabSilence):
        return f"the lab silent for {_days(condition.days)}"
    if isinstance(condition, TrusteeVote):
        return f"{condition.count} trustee vote{'s' if condition.count != 1 else ''}"
    if isinstance(condition, LabRelease):
        return "the lab's admin releases early"
    return "the lab's admin proposes"


def agreement_words(agreement: Agreement) -> list[str]:
    """The agreement in sentences, for people (`escrow agreement show`, the model's page)."""
    lines = []
    for trigger in agreement.triggers:
        opens = (
            "anyone logged in may fetch it, without review"
            if trigger.unlocks == PUBLIC
            else f"requests are decided under policy {trigger.unlocks}"
        )
        lines.append(f"{trigger.name}: when {condition_words(trigger.when)}, {opens}")
    if agreement.trustees:
        lines.append(f"trustees: {', '.join(agreement.trustees)}")
    lines.append(f"amended only with {condition_words(agreement.amendment)}")
    return lines


# --- what a release opens ----------------------------------------------------------------------

# `public`: anyone logged in with a proven key gets a grant at once; the grant is still
# time-limited and counted, so key releases stay on the log.
PUBLIC_GRANT = GrantLimits(default_days=30, max_days=365, releases_per_file=10, renewal=True)


def public_policy(model: str, agreement_sha256: str) -> Policy:
    """The policy a `public` release decides requests under: no NDA, no e-mail check, no
    review; the decision records the agreement's SHA-256 as the policy's."""
    return Policy(
        id=PUBLIC,
        path=Path(PUBLIC),
        sha256=agreement_sha256,
        organisation=model.partition("/")[0],
        models=(model,),
        nda=None,
        eligibility=Eligibility(verified_email=False, proven_key=True),
        approvals=Approvals(count=0, auto=True),
        grant=PUBLIC_GRANT,
        description="released to everyone under its release agreement",
    )
