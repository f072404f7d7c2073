"""CLI login: the OAuth 2.0 Device Authorization Grant (RFC 8628), refresh (RFC 6749 §6) and
revocation (RFC 7009), served by the broker for its one public client, `escrow-cli`.

The terminal asks for a device code and a user code; the person types the user code into the
browser where they are logged in and approves it, which starts a "device" login session with
the browser login's issuer and auth_time; the terminal's next poll exchanges the device code,
once, for that session's access and refresh tokens.

Errors are authlib's RFC 6749/8628 error types: the token endpoint must answer with them
(`{"error": …}`), not with problem+json. Every approval, denial, token issue and revocation is
on the audit log in the same transaction.
"""

from __future__ import annotations

from datetime import timedelta

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.errors import (
    AccessDeniedError,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc8628 import AuthorizationPendingError, ExpiredTokenError, SlowDownError
from authlib.oauth2.rfc8628.endpoint import create_string_user_code
from sqlalchemy import select, update

from broker.adapters.db.models import DeviceAuthorization, LoginSession, UserToken
from broker.adapters.db.uow import UnitOfWork, rowcount
from broker.domain.events import AuditAction
from broker.domain.principals import Principal, PrincipalKind
from broker.domain.secrets import hash_secret, new_secret, prefix_of, secret_matches, split_secret
from broker.errors import Conflict, InvalidInput, NotFound, Unauthorized
from broker.services.people import audit_subject
from broker.services.sessions import (
    TokenPair,
    end_session,
    issue_tokens,
    live_session,
    now,
    refresh_tokens,
    start_session,
)
from broker.services.views_types import DeviceStart

CLIENT_ID = "escrow-cli"  # the only client: public (RFC 6749 §2.1), so it has no secret
DEVICE_CODE_TTL = timedelta(minutes=10)
POLL_INTERVAL_S = 5
SLOW_DOWN_STEP_S = 5  # RFC 8628 §3.5: "increased by 5 seconds for this and all subsequent"
# A poll that arrives this much early still counts as on time: the client measures its wait
# from the previous answer, the broker from the previous request, and networks jitter.
POLL_TOLERANCE = timedelta(seconds=1)
# User codes come from authlib: 8 letters of BCDFGHJKLMNPQRSTVWXZ (no vowels, so no words;
# no digits, so no 0/O or 1/I), shown as XXXX-XXXX: 20^8 ≈ 2^34.6 codes, each live 10 minutes.
USER_CODE_ALPHABET = frozenset("BCDFGHJKLMNPQRSTVWXZ")
DEVICE_CODE_PREFIX = "edc"

PENDING, APPROVED, DENIED, USED = "pending", "approved", "denied", "used"


def check_client(client_id: str | None) -> None:
    if client_id != CLIENT_ID:
        raise InvalidClientError(f"unknown client; the escrow CLI is {CLIENT_ID}")


def start(uow: UnitOfWork, client_id: str | None, scope: str, public_url: str) -> DeviceStart:
    """A new device authorization: a secret device code for the terminal, stored as SHA-256,
    and a short user code for the person to type into the browser."""
    check_client(client_id)
    if scope.strip():
        raise InvalidScopeError("the broker defines no scopes; send none")
    user_code = _unused_user_code(uow)
    # The device code is a bearer secret (whoever holds it gets the tokens once approved), so it
    # has the one secret format; it is looked up by the SHA-256 of the whole string.
    device_code = new_secret(DEVICE_CODE_PREFIX).plaintext
    uow.session.add(
        DeviceAuthorization(
            device_code_sha256=hash_secret(device_code),
            user_code=user_code,
            client_id=CLIENT_ID,
            scope="",
            state=PENDING,
            created_at=now(),
            expires_at=now() + DEVICE_CODE_TTL,
            interval_s=POLL_INTERVAL_S,
        )
    )
    uow.commit()
    verification_uri = f"{public_url.rstrip('/')}/device"
    complete = add_params_to_uri(verification_uri, [("user_code", user_code)])
    return {
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": verification_uri,
        "verification_uri_complete": complete,
        "expires_in": int(DEVICE_CODE_TTL.total_seconds()),
        "interval": POLL_INTERVAL_S,
    }


def _unused_user_code(uow: UnitOfWork) -> str:
    for _ in range(8):
        code = create_string_user_code()
        taken = uow.session.scalar(
            select(DeviceAuthorization.id).where(DeviceAuthorization.user_code == code)
        )
        if taken is None:
            return code
    raise Conflict("could not pick an unused user code", hint="try `escrow login` again")


def normalise_user_code(typed: str) -> str:
    """The stored form XXXX-XXXX of what a person typed (any case, spaces or dashes)."""
    letters = "".join(c for c in typed.upper() if c.isalnum())
    if len(letters) != 8 or not set(letters) <= USER_CODE_ALPHABET:
        raise InvalidInput(
            f"user code {typed.strip()[:20]!r} is not 8 letters like BCDF-GHJK",
            hint="type the code your terminal shows after `escrow login`",
        )
    return f"{letters[:4]}-{letters[4:]}"


# --- the terminal polls (RFC 8628 §3.4, §3.5) ------------------------------------------------


def poll(uow: UnitOfWork, client_id: str | None, device_code: str | None) -> TokenPair:
    """The tokens of an approved device code, once; otherwise the RFC 8628 error to retry on."""
    check_client(client_id)
    if not device_code:
        raise InvalidRequestError("device_code is missing")
    grant = _by_device_code(uow, device_code)
    if grant is None or grant.client_id != client_id:
        raise InvalidGrantError("the device code is unknown")
    if grant.state == USED:
        raise InvalidGrantError(
            "this device code was already exchanged for tokens; run escrow login again"
        )
    moment = now()
    if grant.expires_at <= moment:
        if grant.state == APPROVED and grant.approved_session_id:
            end_session(uow, grant.approved_session_id)  # approved, but never collected
            grant.state = USED
            uow.commit()
        raise ExpiredTokenError("the device code expired; run escrow login again")
    if grant.state == DENIED:
        raise AccessDeniedError("the login was denied in the browser")
    if grant.state == APPROVED:
        return _exchange(uow, grant)
    too_fast = (
        grant.last_polled_at is not None
        and moment - grant.last_polled_at < timedelta(seconds=grant.interval_s) - POLL_TOLERANCE
    )
    grant.last_polled_at = moment
    if too_fast:
        grant.interval_s += SLOW_DOWN_STEP_S
    uow.commit()
    if too_fast:
        raise SlowDownError(f"polling too fast; poll every {grant.interval_s} seconds")
    raise AuthorizationPendingError("waiting for the person to approve the code in the browser")


def _by_device_code(uow: UnitOfWork, device_code: str) -> DeviceAuthorization | None:
    if split_secret(device_code, DEVICE_CODE_PREFIX) is None:
        return None
    # The lookup key is the SHA-256 of a 256-bit random secret: learning which hashes exist
    # reveals nothing about any device code, so an indexed lookup is safe here.
    return uow.session.scalar(
        select(DeviceAuthorization).where(
            DeviceAuthorization.device_code_sha256 == hash_secret(device_code)
        )
    )


def _exchange(uow: UnitOfWork, grant: DeviceAuthorization) -> TokenPair:
    # Claim the code with a conditional update: of two polls racing, only one gets tokens.
    claimed = rowcount(
        uow.session.execute(
            update(DeviceAuthorization)
            .where(DeviceAuthorization.id == grant.id, DeviceAuthorization.state == APPROVED)
            .values(state=USED, last_polled_at=now())
        )
    )
    if claimed != 1:
        raise InvalidGrantError("this device code was already exchanged for tokens")
    session = live_session(uow, grant.approved_session_id or "")
    if session is None:
        raise InvalidGrantError("the login approved for this device has ended")
    pair = issue_tokens(uow, session)
    _audit_issue(uow, session, pair, "device", {"device_authorization": grant.id})
    uow.commit()
    return pair


def _audit_issue(
    uow: UnitOfWork, session: LoginSession, pair: TokenPair, via: str, extra: dict[str, object]
) -> None:
    uow.audit(
        AuditAction.TOKEN_ISSUED,
        _person(session),
        audit_subject(session.user),
        {
            "via": via,
            "client": CLIENT_ID,
            "session": session.id,
            # token ids only: the secret half never leaves this function's caller
            "access_token": _token_id(pair.access_token),
            "refresh_token": _token_id(pair.refresh_token),
            **extra,
        },
    )


def _token_id(token: str) -> str:
    parts = split_secret(token, prefix_of(token) or "")
    assert parts is not None
    return parts[0]


def _person(session: LoginSession) -> Principal:
    return Principal(kind=PrincipalKind.USER, id=str(session.user_id), session_id=session.id)


# --- the person answers in the browser (RFC 8628 §3.3) ---------------------------------------


def waiting(uow: UnitOfWork, user_code: str) -> DeviceAuthorization:
    """The pending, unexpired authorization a person typed the code of."""
    code = normalise_user_code(user_code)
    grant = uow.session.scalar(
        select(DeviceAuthorization).where(DeviceAuthorization.user_code == code)
    )
    if grant is None or grant.state != PENDING or grant.expires_at <= now():
        raise NotFound(
            f"no login is waiting for code {code}: it is unknown, expired or already answered",
            hint="run `escrow login` again and type the new code",
        )
    return grant


def browser_login(uow: UnitOfWork, session_id: object) -> LoginSession | None:
    """The live login of a browser from its cookie's session id: a web or login-link session,
    the only kinds that may answer a code (not a CLI's device session); None without one."""
    live = live_session(uow, session_id) if isinstance(session_id, str) else None
    return live if live is not None and live.kind in ("web", "link") else None


def who(browser: LoginSession) -> str:
    """How the page names the person answering: email, else name, else subject."""
    profile = browser.user.profile
    return (profile and (profile.email or profile.name)) or browser.user.subject


def approve(uow: UnitOfWork, user_code: str, browser: LoginSession) -> LoginSession:
    """Start a device login for the browser's person: same issuer and auth_time, since the
    person proved who they are only once, in the browser."""
    grant = _answer(uow, user_code, browser, APPROVED)
    session = start_session(uow, browser.user, "device", browser.issuer, browser.auth_time)
    grant.approved_session_id = session.id
    uow.audit(
        AuditAction.DEVICE_APPROVED,
        _person(browser),
        audit_subject(browser.user),
        {"device_authorization": grant.id, "client": grant.client_id, "session": session.id},
    )
    uow.commit()
    return session


def deny(uow: UnitOfWork, user_code: str, browser: LoginSession) -> None:
    grant = _answer(uow, user_code, browser, DENIED)
    uow.audit(
        AuditAction.DEVICE_DENIED,
        _person(browser),
        audit_subject(browser.user),
        {"device_authorization": grant.id, "client": grant.client_id},
    )
    uow.commit()


def _answer(
    uow: UnitOfWork, user_code: str, browser: LoginSession, state: str
) -> DeviceAuthorization:
    grant = waiting(uow, user_code)
    # Conditional update: two answers racing (two tabs, two people) cannot both win.
    answered = rowcount(
        uow.session.execute(
            update(DeviceAuthorization)
            .where(DeviceAuthorization.id == grant.id, DeviceAuthorization.state == PENDING)
            .values(state=state, user_id=browser.user_id)
        )
    )
    if answered != 1:
        raise Conflict(
            f"code {grant.user_code} was already answered",
            hint="run `escrow login` again for a new code",
        )
    return grant


# --- refresh (RFC 6749 §6) and revocation (RFC 7009) -----------------------------------------


def refresh(uow: UnitOfWork, client_id: str | None, refresh_token: str | None) -> TokenPair:
    """A new pair for a refresh token, which is spent. A spent token presented again means it
    was copied: the login session is ended (RFC 9700 §4.14.2, refresh token rotation)."""
    check_client(client_id)
    if not refresh_token:
        raise InvalidRequestError("refresh_token is missing")
    parts = split_secret(refresh_token, "ert")
    # Lock the token's row so two refreshes with one token cannot both succeed (PostgreSQL;
    # SQLite transactions take the write lock at BEGIN and so serialise anyway).
    token = uow.session.get(UserToken, parts[0], with_for_update=True) if parts else None
    try:
        pair = refresh_tokens(uow, refresh_token)
    except Unauthorized:
        replayed = _spent_refresh_token(uow, refresh_token)
        if replayed is not None:
            uow.audit(
                AuditAction.TOKEN_REPLAYED,
                _person(replayed.session),
                audit_subject(replayed.session.user),
                {"session": replayed.session_id, "refresh_token": replayed.id},
            )
            end_session(uow, replayed.session_id)
            uow.commit()
        raise InvalidGrantError(
            "the refresh token is invalid, expired or revoked; run escrow login again"
        ) from None
    assert token is not None  # refresh_tokens found it
    _audit_issue(uow, token.session, pair, "refresh", {"refresh_token_spent": token.id})
    uow.commit()
    return pair


def _spent_refresh_token(uow: UnitOfWork, presented: str) -> UserToken | None:
    """The refresh token presented, if it is genuine, already rotated, and its session live."""
    token = _matching_token(uow, presented, "ert")
    if token is None or token.revoked_at is None or token.expires_at <= now():
        return None
    return token if live_session(uow, token.session_id) is not None else None


def _matching_token(uow: UnitOfWork, presented: str, prefix: str) -> UserToken | None:
    parts = split_secret(presented, prefix)
    if parts is None:
        return None
    token = uow.session.get(UserToken, parts[0])
    if token is None or token.kind != {"eat": "access", "ert": "refresh"}[prefix]:
        return None
    return token if secret_matches(parts[1], token.secret_sha256) else None


def revoke(uow: UnitOfWork, client_id: str | None, presented: str | None) -> bool:
    """End the login session of a current access or refresh token (all of its tokens).

    RFC 7009 §2.2: an invalid, expired or already revoked token is not an error (the client
    wanted it unusable, and it is), so this returns False for those.
    """
    check_client(client_id)
    if not presented:
        raise InvalidRequestError("token is missing")
    prefix = prefix_of(presented)
    token = _matching_token(uow, presented, prefix) if prefix in ("eat", "ert") else None
    if token is None or token.revoked_at is not None or token.expires_at <= now():
        return False
    session = live_session(uow, token.session_id)
    if session is None:
        return False
    uow.audit(
        AuditAction.TOKEN_REVOKED,
        _person(session),
        audit_subject(session.user),
        {"session": session.id, "token": token.id, "kind": token.kind, "client": CLIENT_ID},
    )
    end_session(uow, session.id)
    uow.commit()
    return True
