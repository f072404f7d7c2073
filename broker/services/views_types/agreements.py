"""Release agreements of model versions: the agreement with its state, votes, check-ins."""

from __future__ import annotations

from typing import Literal

from typing_extensions import TypedDict

VoteKind = Literal["release", "amend"]
VoteProof = Literal["ssh-signature", "age-challenge"]


class AgreementTrigger(TypedDict):
    """One trigger of the agreement, evaluated now."""

    name: str
    unlocks: str
    """the access policy id it opens the version to, or `public`"""
    met: bool
    missing: list[str]
    """what it still needs, in words (empty when met)"""
    reasons: list[str]


class AgreementVoteView(TypedDict):
    """A trustee's proven vote."""

    trustee: str
    vote: VoteKind
    proposal_sha256: str | None
    """the SHA-256 of the amended text the vote is for (amendment votes)"""
    at: str
    withdrawn_at: str | None
    proof: VoteProof
    """how the trustee proved it: an SSH signature, or an answered age challenge"""
    key: str
    """the id of the trustee's proven key that made the proof"""
    ssh_key: str | None
    """the key of an SSH-signed vote (null for an age challenge)"""


class AgreementReleaseView(TypedDict):
    trigger: str
    unlocks: str
    released_at: str


class AgreementView(TypedDict):
    """A version's release agreement in force: in words, its state, what each trigger still
    misses, the lab's last check-in and the trustees' votes."""

    model: str
    version: str
    deposit_id: str
    state: str
    """`sealed`, `released: TRIGGER`, or `not sealed yet (STATE)`"""
    number: int
    sha256: str
    text: str
    attached_at: str
    words: list[str]
    trustees: list[str]
    release: AgreementReleaseView | None
    triggers: list[AgreementTrigger]
    last_checkin: str | None
    lab_released_at: str | None
    votes: list[AgreementVoteView]
    quarantined_at: str | None
    """set while an operator has quarantined the version: even released, no key is released"""


class AgreementAttached(TypedDict):
    outcome: Literal["attached", "replaced", "amended", "unchanged"]
    agreement: AgreementView


class AgreementRemoved(TypedDict):
    removed: bool


class AgreementVoteResult(TypedDict):
    vote: AgreementVoteView
    created: bool
    agreement: AgreementView


class AgreementVoteWithdrawn(TypedDict):
    vote: AgreementVoteView
    agreement: AgreementView


class AgreementVoteMessage(TypedDict):
    message: str
    """the exact text to sign with ssh-keygen -Y sign -n NAMESPACE"""
    namespace: str


class AgreementVoteChallengeView(TypedDict):
    """A challenge for a trustee's vote: an armored age file to decrypt, whose `secret:` line
    is the answer (POST …/votes with `challenge` and `response`)."""

    id: str
    challenge: str
    """the armored age file, encrypted to `key`"""
    key: str
    message: str
    """the vote that answering it casts (also inside the encrypted text)"""
    expires_at: str


class AgreementCheckinView(TypedDict):
    org: str
    at: str
