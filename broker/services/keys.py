"""Researchers' keys: the recipients grants are issued to, counted only after proof of possession.

A key is registered by a person whose login is at most `FRESH_LOGIN` old (a phished device
code or a stolen session cookie must not be enough to plant an attacker's key: the attacker
would also have to pass the identity provider's login again). The broker then encrypts a
random 32-byte secret to the key, as an armored age file, and keeps only its SHA-256; the
person decrypts it with the private key and sends the secret back. Until then the key is
`pending` and no grant may use it. Registration, proof and retirement are audit events carrying
the user id, its commitment, the key id and the key's fingerprint, never a label or comment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import re
import secrets
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import select, update

from broker import age
from broker.adapters.db.models import ResearcherKey, User
from broker.adapters.db.uow import UnitOfWork, rowcount
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import Principal
from broker.domain.sshsig import ssh_fingerprint
from broker.errors import Conflict, InvalidInput, NotFound, Unauthorized
from broker.services.people import audit_subject
from broker.services.views_types import KeyState, KeyType, KeyView

FRESH_LOGIN = timedelta(minutes=5)
CHALLENGE_TTL = timedelta(minutes=15)
# Why 32 bytes: the secret is the whole proof; 256 bits can neither be guessed nor searched.
SECRET_SIZE = 32
MAX_LABEL = 128

KEY_TYPES = {
    age.X25519Recipient: "x25519",
    age.HybridRecipient: "mlkem768x25519",
    age.SSHEd25519Recipient: "ssh-ed25519",
}
PENDING, PROVEN, RETIRED = "pending", "proven", "retired"


class LoginTooOld(Unauthorized):
    """The action needs a login made in the last few minutes (OIDC max_age)."""

    title = "fresh login required"


class ChallengeExpired(Conflict):
    title = "challenge expired"



def require_recent_login(
    principal: Principal, action: Action, max_age: timedelta = FRESH_LOGIN
) -> None:
    """Refuse unless `principal` is a person who authenticated at most `max_age` ago."""
    authorize(principal, action)
    age_s = int(max_age.total_seconds())
    if principal.auth_time is not None and now() - principal.auth_time <= max_age:
        return
    raise LoginTooOld(
        f"{action} needs a login made in the last {age_s // 60} minutes, and yours is older; "
        "this keeps a stolen session or a phished device code from planting a key",
        hint=f"log in again, then retry at once: in a browser /auth/login?max_age={age_s}, "
        "on the command line `escrow login BROKER`",
    )


# --- recipients -------------------------------------------------------------------------------


def parse_key(text: object) -> tuple[age.Recipient, str]:
    """A researcher's recipient and its key type; anything else is a clear 422."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(
            "'recipient' is missing",
            hint="give an age1… (X25519), age1pq1… (post-quantum) or 'ssh-ed25519 AAAA…' key",
        )
    if "\n" in text.strip():
        raise InvalidInput(
            "'recipient' must be one key on one line",
            hint="register each key on its own",
        )
    recipient = age.parse_recipient(text)
    key_type = KEY_TYPES.get(type(recipient))
    if key_type is None:
        raise InvalidInput(
            f"a {recipient.stanza_type} recipient can not receive grants",
            hint="give an age1…, age1pq1… or ssh-ed25519 key",
        )
    return recipient, key_type


def canonical_recipient(recipient: age.Recipient) -> str:
    """The stored form: ssh keys without their comment (it often holds an email address)."""
    if isinstance(recipient, age.SSHEd25519Recipient):
        return age.SSHEd25519Recipient(recipient.public_key).encode()
    return recipient.encode()


def fingerprint(recipient_text: str) -> str:
    """`SHA256:…` as `ssh-keygen -l` prints it for ssh keys; for age keys, the same form over
    the recipient string (age itself has no fingerprint format)."""
    recipient = age.parse_recipient(recipient_text)
    if isinstance(recipient, age.SSHEd25519Recipient):
        return ssh_fingerprint(base64.b64decode(canonical_recipient(recipient).split()[1]))
    digest = hashlib.sha256(canonical_recipient(recipient).encode()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _label(label: object) -> str:
    if label is None:
        return ""
    if not isinstance(label, str):
        raise InvalidInput("'label' must be a string", hint='e.g. "laptop 2025"')
    label = label.strip()
    if len(label) > MAX_LABEL or any(ord(c) < 32 or ord(c) == 127 for c in label):
        raise InvalidInput(
            f"'label' must be one line of at most {MAX_LABEL} characters",
            hint='e.g. "laptop 2025"',
        )
    return label


# --- use cases --------------------------------------------------------------------------------


def register_key(
    uow: UnitOfWork, actor: Principal, recipient_text: object, label: object, origin: str
) -> ResearcherKey:
    """A new pending key of the actor, with a fresh challenge encrypted to it."""
    require_recent_login(actor, Action.KEYS_MANAGE)
    recipient, key_type = parse_key(recipient_text)
    stored = canonical_recipient(recipient)
    user = _user(uow, actor)
    existing = uow.session.scalar(
        select(ResearcherKey).where(
            ResearcherKey.user_id == user.id,
            ResearcherKey.recipient == stored,
            ResearcherKey.retired_at.is_(None),
        )
    )
    if existing is not None:
        raise Conflict(
            f"this key is already registered as {existing.id} ({state_of(existing)})",
            hint=f"prove it with `escrow keys prove {existing.id}`, or retire it first",
        )
    key = ResearcherKey(
        id="rk_" + secrets.token_hex(8),
        user_id=user.id,
        recipient=stored,
        key_type=key_type,
        label=_label(label),
        created_at=now(),
    )
    _set_challenge(key, recipient, origin)
    uow.session.add(key)
    uow.session.flush()
    uow.audit(
        AuditAction.KEY_REGISTERED,
        actor,
        {**audit_subject(user), "key": key.id},
        {"type": key_type, "fingerprint": fingerprint(stored)},
    )
    uow.commit()
    return key


def new_challenge(uow: UnitOfWork, actor: Principal, key_id: str, origin: str) -> ResearcherKey:
    """Replace the challenge of a pending key (the old one stops working)."""
    key = own_key(uow, actor, key_id)
    _require_pending(key)
    _set_challenge(key, age.parse_recipient(key.recipient), origin)
    uow.commit()
    return key


def prove_key(uow: UnitOfWork, actor: Principal, key_id: str, response: object) -> ResearcherKey:
    """Mark the key proven if `response` is the challenge's secret (hex or base64)."""
    key = own_key(uow, actor, key_id)
    if key.proven_at is not None and key.retired_at is None:
        return key  # proven already: answering again changes nothing
    _require_pending(key)
    if key.challenge_sha256 is None or key.challenge_expires_at is None:
        raise ChallengeExpired(
            f"key {key.id} has no open challenge",
            hint=f"ask for one: POST /api/v1/me/keys/{key.id}/challenge "
            f"(escrow keys challenge {key.id})",
        )
    if key.challenge_expires_at <= now():
        raise ChallengeExpired(
            f"the challenge of key {key.id} expired at "
            f"{key.challenge_expires_at.isoformat(timespec='seconds')}",
            hint=f"ask for a new one and answer within {CHALLENGE_TTL.seconds // 60} minutes: "
            f"POST /api/v1/me/keys/{key.id}/challenge (escrow keys prove {key.id} does it)",
        )
    presented = matching_digest(response, key.challenge_sha256)
    if presented is None:
        raise InvalidInput(
            f"the response does not match the challenge of key {key.id}; the key stays unproven",
            hint="decrypt the challenge with the private key of this very key and send the "
            f"secret it contains: escrow keys prove {key.id} --identity FILE",
        )
    # One conditional UPDATE consumes the challenge: of answers racing with it, exactly one
    # proves the key (and is logged); the others find it proven already.
    consumed = uow.session.execute(
        update(ResearcherKey)
        .where(
            ResearcherKey.id == key.id,
            ResearcherKey.challenge_sha256 == presented,
            ResearcherKey.proven_at.is_(None),
        )
        .values(proven_at=now(), challenge=None, challenge_sha256=None, challenge_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    uow.session.refresh(key)
    if rowcount(consumed) != 1:
        return key
    uow.audit(
        AuditAction.KEY_PROVEN,
        actor,
        {**audit_subject(_user(uow, actor)), "key": key.id},
        {"type": key.key_type, "fingerprint": fingerprint(key.recipient)},
    )
    uow.commit()
    return key


def retire_key(uow: UnitOfWork, actor: Principal, key_id: str) -> ResearcherKey:
    """Retire a key: no new grant goes to it. Retiring twice changes nothing."""
    key = own_key(uow, actor, key_id)
    if key.retired_at is not None:
        return key
    key.retired_at = now()
    key.challenge = key.challenge_sha256 = key.challenge_expires_at = None
    uow.audit(
        AuditAction.KEY_RETIRED,
        actor,
        {**audit_subject(_user(uow, actor)), "key": key.id},
        {"type": key.key_type, "fingerprint": fingerprint(key.recipient)},
    )
    uow.commit()
    return key


def list_keys(uow: UnitOfWork, actor: Principal) -> list[ResearcherKey]:
    authorize(actor, Action.KEYS_MANAGE)
    return list(
        uow.session.scalars(
            select(ResearcherKey)
            .where(ResearcherKey.user_id == int(actor.id))
            .order_by(ResearcherKey.created_at, ResearcherKey.id)
        )
    )


def own_key(uow: UnitOfWork, actor: Principal, key_id: str) -> ResearcherKey:
    """One of the actor's keys; another person's key is "not found", as a missing one."""
    authorize(actor, Action.KEYS_MANAGE)
    key = uow.session.get(ResearcherKey, key_id)
    if key is None or str(key.user_id) != actor.id:
        raise NotFound(
            f"key {key_id!r} does not exist", hint="list your keys with `escrow keys list`"
        )
    return key


def proven_keys(uow: UnitOfWork, user_id: int, key_type: str | None = None) -> list[ResearcherKey]:
    """A user's keys that may receive grants (proven, not retired), oldest first."""
    query = select(ResearcherKey).where(
        ResearcherKey.user_id == user_id,
        ResearcherKey.proven_at.is_not(None),
        ResearcherKey.retired_at.is_(None),
    )
    if key_type is not None:
        query = query.where(ResearcherKey.key_type == key_type)
    return list(uow.session.scalars(query.order_by(ResearcherKey.proven_at)))


def state_of(key: ResearcherKey) -> str:
    if key.retired_at is not None:
        return RETIRED
    return PROVEN if key.proven_at is not None else PENDING


def describe(key: ResearcherKey, *, with_challenge: bool = False) -> KeyView:
    result: KeyView = {
        "id": key.id,
        "type": cast(KeyType, key.key_type),
        "recipient": key.recipient,
        "fingerprint": fingerprint(key.recipient),
        "label": key.label,
        "state": cast(KeyState, state_of(key)),
        "created_at": key.created_at.isoformat(),
        "proven_at": key.proven_at.isoformat() if key.proven_at else None,
        "retired_at": key.retired_at.isoformat() if key.retired_at else None,
        "challenge_expires_at": (
            key.challenge_expires_at.isoformat() if key.challenge_expires_at else None
        ),
    }
    if with_challenge and state_of(key) == PENDING:
        expired = key.challenge_expires_at is None or key.challenge_expires_at <= now()
        result["challenge"] = None if expired or key.challenge is None else key.challenge.decode()
    return result


# --- the challenge ----------------------------------------------------------------------------

_SECRET_LINE = re.compile(r"^secret: ([0-9a-f]{64})$", re.MULTILINE)


def challenge_text(key_id: str, user_id: int, origin: str, expires: datetime, secret: bytes) -> str:
    """The plaintext of a challenge: it says what it is, so nobody hands it out unawares."""
    return (
        "weights-escrow proof of possession\n"
        f"broker: {origin}\n"
        f"key: {key_id}\n"
        f"user: {user_id}\n"
        f"expires: {expires.strftime('%Y-%m-%dT%H:%M:%SZ')}\n"
        "Give this secret only to `escrow keys prove`, or to this broker's key page:\n"
        f"secret: {secret.hex()}\n"
    )


def secret_of_challenge(plaintext: str) -> str | None:
    """The `secret:` value of a decrypted challenge (what `escrow keys prove` submits)."""
    match = _SECRET_LINE.search(plaintext)
    return match.group(1) if match else None


def decode_response(response: object) -> bytes | None:
    """The secret from a response in hex or base64 (standard or URL-safe, padding optional);
    None when it is neither or has the wrong length."""
    if not isinstance(response, str):
        return None
    text = "".join(response.split())
    if len(text) == 2 * SECRET_SIZE and re.fullmatch(r"[0-9a-fA-F]+", text):
        return bytes.fromhex(text)
    try:
        padded = text + "=" * (-len(text) % 4)
        decoded = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == SECRET_SIZE else None


def matching_digest(response: object, stored_sha256: bytes) -> bytes | None:
    """The SHA-256 of the secret in `response` when it matches the stored digest, else None.
    Digests are compared in constant time: the stored value is a hash, never the secret."""
    secret = decode_response(response)
    presented = hashlib.sha256(secret or b"").digest()
    if secret is None or not hmac.compare_digest(presented, stored_sha256):
        return None
    return presented


def encrypt_challenge(plaintext: str, recipient: age.Recipient) -> bytes:
    """A challenge's text as an armored age file to `recipient` (only its holder reads it)."""
    out = io.BytesIO()
    age.encrypt(io.BytesIO(plaintext.encode()), out, [recipient], armor=True)
    return out.getvalue()


def _set_challenge(key: ResearcherKey, recipient: age.Recipient, origin: str) -> None:
    secret = secrets.token_bytes(SECRET_SIZE)
    expires = now() + CHALLENGE_TTL
    key.challenge = encrypt_challenge(
        challenge_text(key.id, key.user_id, origin, expires, secret), recipient
    )
    key.challenge_sha256 = hashlib.sha256(secret).digest()
    key.challenge_expires_at = expires


def _require_pending(key: ResearcherKey) -> None:
    if key.retired_at is not None:
        raise Conflict(
            f"key {key.id} is retired",
            hint="register the key again (escrow keys add) if you want to use it",
        )
    if key.proven_at is not None:
        raise Conflict(f"key {key.id} is proven already", hint="nothing to do")


def _user(uow: UnitOfWork, actor: Principal) -> User:
    user = uow.session.get(User, int(actor.id))
    if user is None:
        raise NotFound(f"user {actor.id} does not exist", hint="log in again")
    return user
