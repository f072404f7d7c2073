"""NDA signatures: a person accepts one exact text, identified by the SHA-256 of its bytes.

The signer sends back the SHA-256 of the text they were shown, so a signature can only be
recorded for the text that is in `policies/ndas/` at that moment, byte for byte. The typed
name, IP address and user agent go to `NdaSignatureContext` (personal data, erasable); the
signature row and its audit event carry only the user id, its commitment and the text's hash.
An optional SSH signature (`ssh-keygen -Y sign -n escrow-nda`) over the same bytes must verify
with one of the signer's proven ssh-ed25519 keys; it is stored as armored text with that key's
id, so an auditor can check it again with `ssh-keygen -Y verify` without trusting the broker.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from broker.adapters.db.models import NdaSignature, NdaSignatureContext, ResearcherKey, User
from broker.adapters.db.uow import UnitOfWork
from broker.domain import sshsig
from broker.domain.access import Action, authorize
from broker.domain.events import AuditAction
from broker.domain.nda import NdaLibrary, NdaText, load_library
from broker.domain.principals import Principal
from broker.errors import Conflict, InvalidInput, NotFound
from broker.services.keys import now, proven_keys
from broker.services.people import audit_subject
from broker.services.views_types import NdaSignatureView, NdaSummary, NdaTextView

MAX_TYPED_NAME = 200
MAX_USER_AGENT = 512
NAMESPACE = sshsig.NDA_NAMESPACE
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def library(policy_dir: Path) -> NdaLibrary:
    """The NDA texts as they are on disk now (read per call: a changed file counts at once)."""
    return load_library(policy_dir / "ndas")


def describe_text(text: NdaText, *, with_text: bool = True) -> NdaTextView:
    result: NdaTextView = {
        "id": text.id,
        "version": text.version,
        "title": text.title,
        "organisation": text.organisation,
        "sha256": text.sha256,
        "size": len(text.raw),
    }
    if with_text:
        result["text"] = text.text
    return result


def list_ndas(texts: NdaLibrary) -> list[NdaSummary]:
    """Each NDA with its latest version and the hashes of all versions."""
    result: list[NdaSummary] = []
    for nda_id in texts.ids():
        versions = texts.versions(nda_id)
        latest = versions[-1]
        result.append(
            {
                "id": latest.id,
                "version": latest.version,
                "title": latest.title,
                "organisation": latest.organisation,
                "sha256": latest.sha256,
                "size": len(latest.raw),
                "latest_version": latest.version,
                "versions": [{"version": t.version, "sha256": t.sha256} for t in versions],
            }
        )
    return result


# --- signing ----------------------------------------------------------------------------------


def sign(
    uow: UnitOfWork,
    actor: Principal,
    texts: NdaLibrary,
    nda_id: str,
    version: object,
    sha256: object,
    typed_name: object,
    ssh_signature: object = None,
    *,
    ip: str | None,
    user_agent: str | None,
) -> tuple[NdaSignature, bool]:
    """Record the actor's signature of one NDA text; (signature, created).

    Signing the same text again returns the first signature unchanged (created False), except
    that an SSH signature may be added to a signature that had none.
    """
    authorize(actor, Action.NDA_SIGN)
    text = _text_read(texts, nda_id, version, sha256)
    name = check_typed_name(typed_name)
    user = uow.session.get(User, int(actor.id))
    if user is None:
        raise NotFound(f"user {actor.id} does not exist", hint="log in again")
    ssh: tuple[str, ResearcherKey] | None = None
    if ssh_signature is not None and ssh_signature != "":
        ssh = verify_ssh_signature(uow, user.id, text, ssh_signature)
    existing = signature_of(uow, user.id, text)
    if existing is not None:
        if ssh is not None and existing.ssh_signature is None:
            _attach(existing, ssh)
            details = _details(existing, ssh[1])
            uow.audit(AuditAction.NDA_SSH_SIGNATURE_ADDED, actor, audit_subject(user), details)
            uow.commit()
        return existing, False
    signature, created = _new_signature(uow, user.id, text, ssh)
    if not created:  # the same person signed the same text at the same instant
        return signature, False
    uow.session.add(
        NdaSignatureContext(
            signature_id=signature.id,
            typed_name=name,
            ip=(ip or None) and ip[:64],
            user_agent=(user_agent or None) and user_agent[:MAX_USER_AGENT],
        )
    )
    details = _details(signature, ssh[1] if ssh else None)
    uow.audit(AuditAction.NDA_SIGNED, actor, audit_subject(user), details)
    uow.commit()
    return signature, True


def _text_read(texts: NdaLibrary, nda_id: str, version: object, sha256: object) -> NdaText:
    """The text the signer says they read: its version named, its SHA-256 matching."""
    if not isinstance(version, str) or not version:
        raise InvalidInput(
            "'version' is missing: name the version of the text you read",
            hint=f"GET /api/v1/ndas/{nda_id} shows the latest version and its sha256",
        )
    text = texts.get(nda_id, version)
    _check_sha256(sha256, text)
    return text


def _new_signature(
    uow: UnitOfWork, user_id: int, text: NdaText, ssh: tuple[str, ResearcherKey] | None
) -> tuple[NdaSignature, bool]:
    """(a new signature row, flushed, True); or (the signature of a concurrent signing of the
    same text that won the race, False)."""
    signature = NdaSignature(
        user_id=user_id,
        nda_id=text.id,
        nda_version=text.version,
        text_sha256=text.sha256,
        signed_at=now(),
    )
    if ssh is not None:
        _attach(signature, ssh)
    uow.session.add(signature)
    try:
        uow.session.flush()
    except IntegrityError:
        uow.session.rollback()
        again = signature_of(uow, user_id, text)
        if again is None:
            raise
        return again, False
    return signature, True


def check_typed_name(value: object) -> str:
    """The full name as typed: one line, trimmed, 1–200 characters, NFC."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(
            "'typed_name' is empty: type your full name to sign",
            hint='e.g. {"typed_name": "Ada Lovelace"}',
        )
    name = unicodedata.normalize("NFC", " ".join(value.split()))
    if len(name) > MAX_TYPED_NAME:
        raise InvalidInput(
            f"'typed_name' is {len(name)} characters long, more than {MAX_TYPED_NAME}",
            hint="type your full name as it appears on official documents",
        )
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise InvalidInput(
            "'typed_name' contains control or invisible formatting characters",
            hint="type your full name as plain text",
        )
    return name


def _check_sha256(value: object, text: NdaText) -> None:
    if not isinstance(value, str) or not _SHA256.match(value.lower()):
        raise InvalidInput(
            "'sha256' must be the 64-hex-digit SHA-256 of the text you read",
            hint=f"GET /api/v1/ndas/{text.id}?version={text.version} returns it",
        )
    if value.lower() != text.sha256:
        raise Conflict(
            f"NDA {text.id!r} version {text.version!r} is not the text you read: you sent "
            f"sha256 {value.lower()[:16]}…, the current text has {text.sha256[:16]}…",
            hint="read the text again (escrow nda show) and sign what it shows now",
        )


def verify_ssh_signature(
    uow: UnitOfWork, user_id: int, text: NdaText, armored: object
) -> tuple[str, ResearcherKey]:
    """(normalised armored signature, the proven key that made it), or a clear 422."""
    if not isinstance(armored, str):
        raise InvalidInput(
            "'ssh_signature' must be the armored text of the .sig file", hint=sshsig.SIGN_HINT
        )
    parsed = sshsig.parse_armored(armored)
    if parsed.namespace != NAMESPACE:
        sshsig.verify(parsed, text.raw, NAMESPACE)  # raises, naming both namespaces
    key = _key_of(uow, user_id, parsed)
    sshsig.verify(parsed, text.raw, NAMESPACE)
    return sshsig.armor(sshsig.encode_blob(parsed)), key


def signer_key(uow: UnitOfWork, user_id: int, parsed: sshsig.SshSignature) -> ResearcherKey:
    """The proven ssh-ed25519 key of the user that made `parsed` (NDA signatures, and trustees'
    votes on release agreements), or a clear 422."""
    return _key_of(uow, user_id, parsed)


def _key_of(uow: UnitOfWork, user_id: int, parsed: sshsig.SshSignature) -> ResearcherKey:
    line = parsed.public_key_line()
    for key in proven_keys(uow, user_id, "ssh-ed25519"):
        if key.recipient == line:
            return key
    raise sshsig.SshSignatureError(
        f"ssh signature: made with key {parsed.fingerprint}, which is not a proven "
        "ssh-ed25519 key of yours",
        hint="sign with a key you registered and proved (escrow keys list), or register this "
        "one first: escrow keys add ~/.ssh/id_ed25519.pub, then escrow keys prove",
    )


def _attach(signature: NdaSignature, ssh: tuple[str, ResearcherKey]) -> None:
    signature.ssh_signature, signature.ssh_key_id = ssh[0], ssh[1].id


def _details(signature: NdaSignature, key: ResearcherKey | None) -> dict[str, Any]:
    details: dict[str, Any] = {
        "nda": signature.nda_id,
        "version": signature.nda_version,
        "sha256": signature.text_sha256,
        "signature": str(signature.id),
    }
    if key is not None:
        details["ssh_key"] = key.id
        details["ssh_key_fingerprint"] = sshsig.ssh_fingerprint(_wire(key.recipient))
    return details


def _wire(recipient: str) -> bytes:
    return base64.b64decode(recipient.split()[1])


# --- reading signatures -----------------------------------------------------------------------


def signature_of(uow: UnitOfWork, user_id: int, text: NdaText) -> NdaSignature | None:
    """The user's signature of exactly this text, if any (what access policies ask)."""
    return uow.session.scalar(
        select(NdaSignature).where(
            NdaSignature.user_id == user_id,
            NdaSignature.nda_id == text.id,
            NdaSignature.text_sha256 == text.sha256,
        )
    )


def has_signed(uow: UnitOfWork, user_id: int, text: NdaText) -> bool:
    return signature_of(uow, user_id, text) is not None


def my_signatures(uow: UnitOfWork, actor: Principal) -> list[NdaSignature]:
    authorize(actor, Action.NDA_SIGN)
    return list(
        uow.session.scalars(
            select(NdaSignature)
            .where(NdaSignature.user_id == int(actor.id))
            .order_by(NdaSignature.signed_at, NdaSignature.id)
        )
    )


def describe_signature(uow: UnitOfWork, signature: NdaSignature) -> NdaSignatureView:
    """A signature as its signer sees it, with what an auditor needs to re-verify the SSH
    signature offline (`allowed_signers` line and the command)."""
    result: NdaSignatureView = {
        "id": str(signature.id),
        "nda": signature.nda_id,
        "version": signature.nda_version,
        "sha256": signature.text_sha256,
        "signed_at": signature.signed_at.isoformat(),
        "ssh_signature": signature.ssh_signature,
        "ssh_key": signature.ssh_key_id,
    }
    if signature.ssh_key_id is not None:
        key = uow.session.get(ResearcherKey, signature.ssh_key_id)
        if key is not None:
            principal = f"user-{signature.user_id}"
            result["ssh_public_key"] = key.recipient
            result["ssh_key_fingerprint"] = sshsig.ssh_fingerprint(_wire(key.recipient))
            result["allowed_signers"] = f'{principal} namespaces="{NAMESPACE}" {key.recipient}'
            result["verify_command"] = (
                f"ssh-keygen -Y verify -f allowed_signers -I {principal} -n {NAMESPACE} "
                f"-s signature.sig < NDA.md"
            )
    return result
