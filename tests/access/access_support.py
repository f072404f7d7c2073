"""What access tests share beyond fixtures (imported by name: `conftest` is ambiguous)."""

WEIGHTS = {"model.safetensors": b"\x00weights\x01" * 9000, "config.json": b'{"layers": 2}'}

# the test policy: one approval by a reviewer of acme-ai, NDA v1, a proven key
POLICY = """\
organisation: acme-ai
models: ["acme-ai/*"]
nda: {id: acme-research-nda, min_version: 1}
eligibility: {verified_email: true, proven_key: true}
approvals: {count: 1, role: reviewer}
grant: {default_days: 14, max_days: 30, releases_per_file: 2}
"""

# renewal allowed: reviewed (acme-ai/renewable-*) and automatic (acme-ai/quick-*)
RENEWABLE_POLICY = """\
organisation: acme-ai
models: ["acme-ai/renewable-*"]
nda: {id: acme-research-nda, min_version: 1}
approvals: {count: 1, role: reviewer}
grant: {default_days: 14, max_days: 30, releases_per_file: 2, renewal: true}
"""

QUICK_POLICY = """\
organisation: acme-ai
models: ["acme-ai/quick-*"]
nda: {id: acme-research-nda, min_version: 1}
approvals: {auto: true}
grant: {default_days: 7, max_days: 10, releases_per_file: 1, renewal: true}
"""


def mirror_whole_log(escrow, uow) -> int:
    """Sign a checkpoint and mirror the whole log to the bucket as one batch (as the recovery
    tests cut it: the seal mirrored a first batch already); the checkpoint's size."""
    from broker.services import audit

    size = audit.sign_checkpoint(escrow, uow).size
    for key in escrow.store.list_keys(audit.ENTRIES_PREFIX):
        escrow.store.delete(key)
    audit.mirror_entries(escrow, uow, size)
    return size


def set_grant(escrow, grant_id: str, **values) -> None:
    """Change a stored grant (its times, mostly): what the clock would do, at once."""
    from broker.adapters.db.models import Grant

    with escrow.uow() as uow:
        grant = uow.session.get(Grant, grant_id)
        for name, value in values.items():
            setattr(grant, name, value)
        uow.commit()


def stored_grant(escrow, grant_id: str):
    """The grant as stored (exact times, not the API's seconds), detached."""
    from broker.adapters.db.models import Grant

    with escrow.uow() as uow:
        grant = uow.session.get(Grant, grant_id)
        uow.session.expunge(grant)
        return grant


def person_token(broker, email: str, roles: tuple[tuple[str, str], ...] = ()) -> str:
    """A person with `roles` in the database of a broker process, and their access token."""
    from datetime import UTC, datetime

    from broker.config import load_settings
    from broker.container import build_escrow
    from broker.domain.principals import OPERATOR
    from broker.services import people, sessions

    escrow = build_escrow(load_settings(broker.env))
    with escrow.uow() as uow:
        user = people.upsert_user(uow, OPERATOR, "https://idp.uni.example", email,
                                  people.Claims(email=email, email_verified=True))
        for org, role in roles:
            people.grant_org_role(uow, OPERATOR, user, org, role)
        session = sessions.start_session(uow, user, "device", user.issuer, datetime.now(UTC))
        token = sessions.issue_tokens(uow, session).access_token
        uow.commit()
    escrow.engine.dispose()
    return token


def proven_ssh_key(escrow, user_id, key) -> str:
    """Register the ssh-ed25519 key at `key` (a path; its .pub beside it) for the user and prove
    it by answering its age challenge, as `escrow keys add` + `escrow keys prove` do: its id."""
    import io
    import re
    from datetime import UTC, datetime

    from broker import age
    from broker.domain.principals import Principal, PrincipalKind
    from broker.services import keys

    principal = Principal(kind=PrincipalKind.USER, id=user_id, auth_time=datetime.now(UTC))
    with escrow.uow() as uow:
        made = keys.register_key(uow, principal, key.with_suffix(".pub").read_text(), "",
                                 escrow.settings.origin)
        key_id, challenge = made.id, made.challenge
    out = io.BytesIO()
    age.decrypt(io.BytesIO(challenge), out, age.parse_identities(key.read_text()))
    secret = re.search(r"^secret: (\w+)$", out.getvalue().decode(), re.M).group(1)
    with escrow.uow() as uow:
        keys.prove_key(uow, principal, key_id, secret)
    return key_id

