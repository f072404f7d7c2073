"""A trustee's vote proven by an age challenge instead of an SSH signature.

The trustee asks for a challenge: the broker encrypts a fresh random secret to a proven key of
theirs, in a plaintext that carries the exact vote message the answer will cast, and keeps only
the secret's SHA-256, the message, the trustee, the agreement in force and an expiry. The trustee
decrypts it (`escrow agreement vote … --identity key.txt`) and sends the secret back; the
broker compares digests in constant time and consumes the challenge in one conditional UPDATE,
so a challenge casts at most one vote, only for its trustee, its version, its agreement and its
proposal, and only before it expires. Both steps need a fresh login, as an SSH-signed vote does.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import update

from broker import age
from broker.adapters.db.models import AgreementVote, AgreementVoteChallenge, ResearcherKey
from broker.adapters.db.uow import UnitOfWork, rowcount
from broker.container import Escrow
from broker.domain.access import Action
from broker.domain.clock import now
from broker.domain.principals import Principal
from broker.errors import Conflict, Forbidden, InvalidInput, NotFound
from broker.services.agreements.common import name_of
from broker.services.agreements.votes import (
    AGE_CHALLENGE,
    Ballot,
    Proof,
    cast_vote,
    proposal_of,
    require_open,
    trustee_of,
    vote_message,
)
from broker.services.keys import (
    CHALLENGE_TTL,
    SECRET_SIZE,
    ChallengeExpired,
    canonical_recipient,
    encrypt_challenge,
    matching_digest,
    parse_key,
    proven_keys,
    require_recent_login,
)


def vote_challenge(
    uow: UnitOfWork,
    actor: Principal,
    model: object,
    version: object,
    proposal: object,
    key_ref: object,
    origin: str,
) -> tuple[AgreementVoteChallenge, bytes]:
    """A new challenge for the trustee's vote, encrypted to one of their proven keys (`key_ref`:
    its id or its public key; may be left out when they have one). Returns (challenge, the
    armored age file); the file is not kept."""
    require_recent_login(actor, Action.AGREEMENT_VOTE)
    deposit, row, user, trustee = trustee_of(uow, actor, model, version)
    proposal_sha = proposal_of(proposal)
    require_open(deposit, proposal_sha)
    key = _key(uow, user.id, key_ref, name_of(deposit))
    message = vote_message(deposit, row, proposal_sha)
    secret = secrets.token_bytes(SECRET_SIZE)
    challenge = AgreementVoteChallenge(
        id="vc_" + secrets.token_hex(8),
        agreement_id=row.id,
        user_id=user.id,
        key_id=key.id,
        proposal_sha256=proposal_sha,
        message=message,
        secret_sha256=hashlib.sha256(secret).digest(),
        created_at=now(),
        expires_at=now() + CHALLENGE_TTL,
    )
    uow.session.add(challenge)
    uow.session.flush()
    armored = encrypt_challenge(
        challenge_text(challenge, trustee, origin, secret), age.parse_recipient(key.recipient)
    )
    uow.commit()
    return challenge, armored


# Long: each refusal reads best in the order the checks are made.
def vote_by_challenge(
    escrow: Escrow,
    uow: UnitOfWork,
    actor: Principal,
    model: object,
    version: object,
    challenge_id: object,
    response: object,
    proposal: object = None,
) -> tuple[AgreementVote, bool]:
    """Record the trustee's vote if `response` is the secret of their open challenge for this
    very vote; fire the agreement when it is met. Returns (vote, created)."""
    require_recent_login(actor, Action.AGREEMENT_VOTE)
    deposit, row, user, trustee = trustee_of(uow, actor, model, version)
    proposal_sha = proposal_of(proposal)
    require_open(deposit, proposal_sha)
    name = name_of(deposit)
    again = f"ask for a new one: escrow agreement vote {name} --identity FILE does both steps"
    challenge = _challenge(uow, challenge_id, name)
    if challenge.user_id != user.id:
        raise Forbidden(
            f"vote challenge {challenge.id} was issued to another trustee, not to you",
            hint="answer the challenge you asked for yourself; " + again,
        )
    if challenge.agreement_id != row.id or challenge.message != vote_message(
        deposit, row, proposal_sha
    ):
        raise Conflict(
            f"vote challenge {challenge.id} was issued for another vote (another version, "
            f"agreement or proposal) than this one on {name}",
            hint=again,
        )
    if challenge.used_at is not None:
        raise Conflict(
            f"vote challenge {challenge.id} was already answered at {_iso(challenge.used_at)}: "
            "a challenge casts one vote",
            hint=again,
        )
    if challenge.expires_at <= now():
        raise ChallengeExpired(
            f"vote challenge {challenge.id} expired at {_iso(challenge.expires_at)}",
            hint=f"answer within {CHALLENGE_TTL.seconds // 60} minutes; {again}",
        )
    presented = matching_digest(response, challenge.secret_sha256)
    if presented is None:
        raise InvalidInput(
            f"the response does not match vote challenge {challenge.id}; no vote is recorded",
            hint="decrypt the challenge with the private key it was encrypted to and send the "
            f"secret it contains: escrow agreement vote {name} --identity FILE",
        )
    key = _still_proven(uow, challenge.key_id, name)
    _consume(uow, challenge, presented, again)
    proof = Proof(
        kind=AGE_CHALLENGE, key=key, challenge_id=challenge.id, audit={"challenge": challenge.id}
    )
    ballot = Ballot(deposit, row, user, trustee, proposal_sha)
    return cast_vote(escrow, uow, actor, ballot, proof, challenge.message)


def challenge_text(
    challenge: AgreementVoteChallenge, trustee: str, origin: str, secret: bytes
) -> str:
    """The plaintext: what answering it does, the vote message itself, and the secret."""
    return (
        "weights-escrow release agreement vote challenge\n"
        f"broker: {origin}\n"
        f"challenge: {challenge.id}\n"
        f"trustee: {trustee}\n"
        f"expires: {_iso(challenge.expires_at)}\n"
        "Answering it casts this vote, as if you signed it:\n"
        "---\n"
        f"{challenge.message}"
        "---\n"
        "Give this secret only to `escrow agreement vote`, or to this broker:\n"
        f"secret: {secret.hex()}\n"
    )


def _key(uow: UnitOfWork, user_id: int, key_ref: object, name: str) -> ResearcherKey:
    proven = proven_keys(uow, user_id)
    if not proven:
        raise Conflict(
            "you have no proven key to receive a vote challenge",
            hint="register and prove one: escrow keys add --identity key.txt",
        )
    if key_ref is None or key_ref == "":
        if len(proven) == 1:
            return proven[0]
        raise InvalidInput(
            f"you have {len(proven)} proven keys: say which one the challenge is encrypted to "
            "('key': its id or its public key)",
            hint=f"escrow agreement vote {name} --identity FILE names the key of FILE",
        )
    if isinstance(key_ref, str) and key_ref.startswith("rk_"):
        found = [key for key in proven if key.id == key_ref]
    else:
        wanted = canonical_recipient(parse_key(key_ref)[0])
        found = [key for key in proven if key.recipient == wanted]
    if not found:
        raise NotFound(
            f"{key_ref} is not a proven key of yours",
            hint="escrow keys list shows your keys; escrow keys add --identity FILE proves one",
        )
    return found[0]


def _challenge(uow: UnitOfWork, challenge_id: object, name: str) -> AgreementVoteChallenge:
    if not isinstance(challenge_id, str) or not challenge_id:
        raise InvalidInput(
            "'challenge' is missing: give the id of the vote challenge you answer",
            hint=f"escrow agreement vote {name} --identity FILE asks for one and answers it",
        )
    found = uow.session.get(AgreementVoteChallenge, challenge_id)
    if found is None:
        raise NotFound(
            f"vote challenge {challenge_id!r} does not exist",
            hint=f"ask for one: escrow agreement vote {name} --identity FILE",
        )
    return found


def _still_proven(uow: UnitOfWork, key_id: str, name: str) -> ResearcherKey:
    key = uow.session.get(ResearcherKey, key_id)
    if key is None or key.proven_at is None or key.retired_at is not None:
        raise Conflict(
            f"key {key_id}, which the challenge was encrypted to, is no longer a proven key",
            hint=f"ask for a challenge to a key you hold now: escrow agreement vote {name} "
            "--identity FILE",
        )
    return key


def _consume(
    uow: UnitOfWork, challenge: AgreementVoteChallenge, presented: bytes, hint: str
) -> None:
    # One conditional UPDATE: of answers racing with it, exactly one casts the vote.
    used = uow.session.execute(
        update(AgreementVoteChallenge)
        .where(
            AgreementVoteChallenge.id == challenge.id,
            AgreementVoteChallenge.secret_sha256 == presented,
            AgreementVoteChallenge.used_at.is_(None),
        )
        .values(used_at=now())
        .execution_options(synchronize_session=False)
    )
    if rowcount(used) != 1:
        raise Conflict(f"vote challenge {challenge.id} was already answered", hint=hint)
    uow.session.refresh(challenge)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
