"""Email notices as plain text, composed from facts (no database, no clock, no mail server).

Each notice says only what its recipient may already see on the broker's pages: ids, the model
version, dates, a decision. Never a file key, a token, a signature, or another person's email
address or name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

MAX_SUBJECT = 200


class NoticeKind(StrEnum):
    REVIEW_WAITING = "review_waiting"
    DECISION = "decision"
    GRANT_EXPIRING = "grant_expiring"
    GRANT_EXPIRED = "grant_expired"
    AGREEMENT_TRIGGERED = "agreement_triggered"


@dataclass(frozen=True)
class NoticeSettings:
    """What composing notices needs of the deployment: the address of its pages."""

    site_url: str


@dataclass(frozen=True)
class Notice:
    kind: NoticeKind
    subject: str
    body: str
    about: str  # what the notice is about (a request, a grant, a version): part of its dedupe key


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _one_line(text: str) -> str:
    """A subject is one line: a header line must never carry a newline."""
    return " ".join(text.split())[:MAX_SUBJECT]


def _body(*paragraphs: str) -> str:
    footer = "This is an automatic message from the weights escrow; replies are not read."
    return "\n\n".join([*paragraphs, footer]) + "\n"


def review_waiting(
    site: NoticeSettings, request_id: str, version: str, purpose: str, renews: str | None
) -> Notice:
    """To the reviewers of the lab: a request waits for them."""
    what = f"A renewal of grant {renews}" if renews else "A request"
    return Notice(
        NoticeKind.REVIEW_WAITING,
        _one_line(f"Review waiting: {version} ({request_id})"),
        _body(
            f"{what} for {version} waits for review: {request_id}.",
            f"Purpose given by the researcher:\n{purpose}",
            f"Review it at {site.site_url}/lab/reviews or with `escrow review list`.",
        ),
        request_id,
    )


def decision(
    site: NoticeSettings,
    request_id: str,
    version: str,
    approved: bool,
    grant_id: str | None,
    expires_at: datetime | None,
) -> Notice:
    """To the researcher: their request was approved or denied."""
    outcome = "approved" if approved else "denied"
    lines = [f"Your request {request_id} for {version} was {outcome}."]
    if approved and grant_id and expires_at:
        lines.append(
            f"Grant {grant_id} lets you fetch the weights until {_when(expires_at)}: "
            f"escrow fetch {version}"
        )
    elif not approved:
        lines.append("You may make a new request once what was missing is done.")
    lines.append(f"Your requests: {site.site_url}/requests")
    return Notice(
        NoticeKind.DECISION,
        _one_line(f"Request {outcome}: {version} ({request_id})"),
        _body(*lines),
        request_id,
    )


def grant_expiring(
    site: NoticeSettings, grant_id: str, version: str, expires_at: datetime
) -> Notice:
    """To the researcher: their grant ends soon."""
    then = (
        f"To continue, ask for a renewal where the policy allows it (escrow grants renew "
        f"{grant_id}), or make a new request."
    )
    return Notice(
        NoticeKind.GRANT_EXPIRING,
        _one_line(f"Grant expiring {expires_at:%Y-%m-%d}: {version} ({grant_id})"),
        _body(
            f"Your grant {grant_id} for {version} expires at {_when(expires_at)}.",
            then,
            f"Your grants: {site.site_url}/requests",
        ),
        grant_id,
    )


def grant_expired(
    site: NoticeSettings, grant_id: str, version: str, expires_at: datetime
) -> Notice:
    """To the researcher: their grant has ended; the close-out is due."""
    return Notice(
        NoticeKind.GRANT_EXPIRED,
        _one_line(f"Grant expired: {version} ({grant_id})"),
        _body(
            f"Your grant {grant_id} for {version} expired at {_when(expires_at)}: no more "
            "keys are released under it.",
            "Delete your copy of the weights and attest it: "
            f"escrow grants close {grant_id} --attest-deleted",
            f"Your grants: {site.site_url}/requests",
        ),
        grant_id,
    )


def agreement_triggered(
    site: NoticeSettings, version: str, trigger: str, unlocks: str, released_at: datetime
) -> Notice:
    """To the lab's admins and the agreement's trustees: a release trigger fired."""
    opened = (
        "anyone logged in may now fetch it, without review"
        if unlocks == "public"
        else f"requests are now decided under policy {unlocks}"
    )
    return Notice(
        NoticeKind.AGREEMENT_TRIGGERED,
        _one_line(f"Release agreement triggered: {version} ({trigger})"),
        _body(
            f"The release agreement of {version} was triggered by `{trigger}` at "
            f"{_when(released_at)}: {opened}. A triggered release is permanent.",
            f"The agreement and its state: {site.site_url}/agreements/{version.replace('@', '/')}"
            f" or `escrow agreement show {version}`.",
        ),
        version,
    )
