"""Release agreements that bind: attach, amend, check in, vote, release, and fire triggers.

The format and its evaluation are pure (`broker.policy.agreement`, `.agreement_rules`); this
module gathers the facts (now, the lab's last check-in, trustees' votes, the lab's early
release), records every change on the audit log, and keeps the texts in the bucket beside the
deposit (`deposits/<id>/agreements/`) so that recovery restores them.

Binding: before a version is sealed, its depositor or admin may attach and replace its agreement
freely. Once sealed, the agreement in force is replaced only by an amendment that its own
amendment rule allows (by default the lab's admin proposing AND a trustee majority voting for
that exact text), attached by the lab's admin or by a trustee the agreement names (so that a rule
needing no admin still works for a lab that has vanished); any other replacement or a removal is
refused, and the refusal is an audit event of its own. A release under a trigger is permanent:
no route undoes it.

Trustees vote as `ssh-keygen -Y sign -n escrow-agreement` over `vote_message(...)`, with a proven
ssh-ed25519 key of theirs (as NDA signatures), or by answering an age challenge bound to that
message and encrypted to a proven key of theirs (as key proofs), after a fresh login (as key
registration).

The service is a package, one module per concern; this module is its public face (what the API,
the web pages, the worker, the access facts and recovery call), so callers need not know the
layout:

- `common`: finding a version and its agreement, the check-ins and votes, what the others share;
- `texts`: attaching, amending, removing, and the texts' copies in the bucket;
- `votes`: the lab's check-ins, trustees' votes and their withdrawal, the lab's early release;
- `challenges`: a trustee's vote proven by an age challenge instead of an SSH signature;
- `triggers`: evaluating, firing (on a vote, a release, or the worker's clock), and the policy
  a released version's requests are decided under;
- `views`: the agreement as shown to people and the API.
"""

from broker.services.agreements.challenges import vote_by_challenge, vote_challenge
from broker.services.agreements.common import (
    AGREEMENTS_DIR,
    MAX_TEXT,
    NAMESPACE,
    AgreementBinds,
    active_votes,
    current,
    find_deposit,
    last_checkin,
    parsed,
)
from broker.services.agreements.texts import attach, describe_row, remove
from broker.services.agreements.triggers import decide, fire_due, fire_if_met, unlocked_policy
from broker.services.agreements.views import describe, describe_vote, show, show_if_any, states
from broker.services.agreements.votes import (
    checkin,
    lab_release,
    message_for,
    vote,
    vote_message,
    withdraw,
)

__all__ = [
    "AGREEMENTS_DIR",
    "AgreementBinds",
    "MAX_TEXT",
    "NAMESPACE",
    "active_votes",
    "attach",
    "checkin",
    "current",
    "decide",
    "describe",
    "describe_row",
    "describe_vote",
    "find_deposit",
    "fire_due",
    "fire_if_met",
    "lab_release",
    "last_checkin",
    "message_for",
    "parsed",
    "remove",
    "show",
    "show_if_any",
    "states",
    "unlocked_policy",
    "vote",
    "vote_by_challenge",
    "vote_challenge",
    "vote_message",
    "withdraw",
]
