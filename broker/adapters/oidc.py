"""OpenID Connect web login through authlib's Flask client: authorization code + PKCE (S256).

One authlib client per configured issuer (`Settings.oidc_issuers`). `begin` makes the
authorization URL and a `PendingLogin` (state, nonce, PKCE verifier, and the provider it is
bound to) that the caller keeps in the signed session cookie; `finish` takes it back with the
provider's response and answers a `VerifiedLogin`, or raises one of our errors:

- the state must match the pending login, which is used once and lives 10 minutes;
- the provider is the one bound to the state, never one named by the response; the response's
  `iss` (RFC 9207) must be that provider's issuer (mix-up defence);
- the ID token's signature (the provider's JWKS, asymmetric algorithms only), issuer, audience,
  expiry, nonce and, when `max_age` was asked, `auth_time` are verified;
- claims missing from the ID token come from userinfo, whose `sub` must be the ID token's.

Discovery runs only for configured issuers, over https or to loopback (`check_provider_url`),
and the discovered document must name the configured issuer and https endpoints.
`trusted_claims` then decides which email and affiliation values count for eligibility.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, current_app
from joserfc.errors import JoseError

from broker.config import OidcIssuer, check_provider_url
from broker.errors import BadRequest, ConfigError, NotFound, Unauthorized, Unavailable

log = logging.getLogger(__name__)

# JWS algorithms an ID token may be signed with: asymmetric only. "none" and the HMAC family
# (keyed with the client secret, which the broker shares with the provider) are refused.
ID_TOKEN_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "Ed25519",
)
LEEWAY_S = 60  # clock skew tolerated between the broker and a provider
PENDING_TTL_S = 600  # a login must come back from the provider within 10 minutes
HTTP_TIMEOUT_S = 10
USERINFO_CLAIMS = ("email", "email_verified", "name", "eduperson_scoped_affiliation")
AFFILIATION_CLAIM = "eduperson_scoped_affiliation"

UNKNOWN_STATE = BadRequest(
    "this login is unknown, expired or already used (state does not match)",
    hint="start again from /auth/login; a login must come back within 10 minutes, once",
)


@dataclass(frozen=True)
class PendingLogin:
    """What the broker remembers between the redirect to the provider and the callback."""

    provider: str
    issuer: str
    state: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    max_age: int | None
    started_at: float

    def to_session(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_session(cls, data: object) -> PendingLogin | None:
        try:
            return cls(**data) if isinstance(data, dict) else None
        except TypeError:
            return None


@dataclass(frozen=True)
class VerifiedLogin:
    """A provider vouched for (issuer, subject); `claims` is the ID token filled from userinfo."""

    provider: OidcIssuer
    subject: str
    auth_time: datetime | None
    claims: dict[str, Any]
    raw: dict[str, Any]  # {"id_token": ..., "userinfo": ...}, every claim as received

    @property
    def issuer(self) -> str:
        return self.provider.issuer


@dataclass(frozen=True)
class Trusted:
    """The claim values that count for eligibility: those the issuer is authoritative for."""

    email: str | None
    email_verified: bool  # verified by the provider *and* in one of its email domains
    name: str | None
    affiliations: tuple[str, ...]  # scoped affiliations within the provider's scopes


def trusted_claims(provider: OidcIssuer, claims: Mapping[str, Any]) -> Trusted:
    """One provider must not vouch for another institution's people: an email counts as
    verified only if the provider says so and its domain is one the provider is configured for;
    an `eduperson_scoped_affiliation` value counts only if its scope is one of the provider's."""
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    said_verified = claims.get("email_verified") in (True, "true")
    domain = email.rpartition("@")[2].lower() if email and "@" in email else None
    values = claims.get(AFFILIATION_CLAIM) or []
    if isinstance(values, str):
        values = values.split()
    affiliations = set()
    for value in values if isinstance(values, list) else []:
        if not isinstance(value, str):
            continue
        affiliation, _, scope = value.lower().partition("@")
        if affiliation and scope in provider.affiliation_scopes:
            affiliations.add(f"{affiliation}@{scope}")
    name = claims.get("name")
    if not isinstance(name, str):
        parts = [claims.get("given_name"), claims.get("family_name")]
        name = " ".join(p for p in parts if isinstance(p, str)) or None
    return Trusted(
        email=email,
        email_verified=said_verified and domain in provider.email_domains,
        name=name,
        affiliations=tuple(sorted(affiliations)),
    )


class OidcProviders:
    """The configured OpenID Providers, each an authlib client (`init_app` registers them)."""

    def __init__(self, issuers: tuple[OidcIssuer, ...]) -> None:
        for issuer in issuers:
            check_provider_url(f"OpenID Provider {issuer.name!r}: issuer", issuer.issuer)
        self._issuers = {issuer.name: issuer for issuer in issuers}
        self._oauth = OAuth()

    def init_app(self, app: Flask) -> None:
        self._oauth.init_app(app)
        for issuer in self._issuers.values():
            self._oauth.register(
                issuer.name,
                client_id=issuer.client_id,
                client_secret=issuer.client_secret,
                server_metadata_url=issuer.issuer.rstrip("/") + "/.well-known/openid-configuration",
                client_kwargs={
                    "scope": issuer.scopes,
                    "code_challenge_method": "S256",
                    "default_timeout": HTTP_TIMEOUT_S,
                },
            )
        app.extensions["oidc"] = self

    @property
    def names(self) -> list[str]:
        return sorted(self._issuers)

    def get(self, name: str) -> OidcIssuer:
        issuer = self._issuers.get(name)
        if issuer is None:
            raise NotFound(
                f"OpenID Provider {name!r} is not configured here",
                hint=f"log in with one of: {', '.join(self.names) or '(none configured)'}",
            )
        return issuer

    def begin(self, name: str, redirect_uri: str, max_age: int | None) -> tuple[str, PendingLogin]:
        """The provider's authorization URL and the login to remember until the callback."""
        issuer = self.get(name)
        client = self._oauth.create_client(name)
        self._metadata(issuer)
        extra = {} if max_age is None else {"max_age": max_age}
        try:
            started = client.create_authorization_url(redirect_uri, **extra)
        except (requests.RequestException, OAuthError) as error:
            raise _unreachable(issuer, error) from None
        pending = PendingLogin(
            provider=name,
            issuer=issuer.issuer,
            state=started["state"],
            nonce=started["nonce"],
            code_verifier=started["code_verifier"],
            redirect_uri=redirect_uri,
            max_age=max_age,
            started_at=time.time(),
        )
        return started["url"], pending

    def finish(self, pending: PendingLogin | None, response: Mapping[str, str]) -> VerifiedLogin:
        """Check the provider's answer to `pending` and return who logged in."""
        state = response.get("state") or ""
        if pending is None or not hmac.compare_digest(pending.state.encode(), state.encode()):
            raise UNKNOWN_STATE
        if not 0 <= time.time() - pending.started_at <= PENDING_TTL_S:
            raise UNKNOWN_STATE
        issuer = self._issuers.get(pending.provider)
        if issuer is None or issuer.issuer != pending.issuer:
            raise UNKNOWN_STATE  # the configuration changed while the login was under way
        metadata = self._metadata(issuer)
        _check_response_issuer(issuer, metadata, response.get("iss"))
        if response.get("error"):
            described = (
                f" ({response['error_description']})" if response.get("error_description") else ""
            )
            raise Unauthorized(
                f"{issuer.name}: the identity provider refused the login: "
                f"{response['error']}{described}",
                hint="nothing was changed; try again from /auth/login, or ask your institution",
            )
        if not response.get("code"):
            raise BadRequest(
                f"{issuer.name}: the provider's answer has no code",
                hint="start again from /auth/login",
            )
        client = self._oauth.create_client(issuer.name)
        token = self._exchange(client, issuer, pending, response["code"])
        claims = self._verify_id_token(client, issuer, pending, token)
        userinfo = self._userinfo(client, issuer, metadata, token, claims)
        merged = {**{k: v for k, v in userinfo.items() if k not in claims}, **claims}
        return VerifiedLogin(
            provider=issuer,
            subject=claims["sub"],
            auth_time=_auth_time(issuer, pending, claims),
            claims=merged,
            raw={"id_token": claims, "userinfo": userinfo},
        )

    # --- steps ---------------------------------------------------------------------------

    def _metadata(self, issuer: OidcIssuer) -> dict[str, Any]:
        client = self._oauth.create_client(issuer.name)
        try:
            metadata = client.load_server_metadata()
        except (requests.RequestException, ValueError) as error:
            raise _unreachable(issuer, error) from None
        if metadata.get("issuer") != issuer.issuer:
            raise Unavailable(
                f"{issuer.name}: discovery names the issuer {metadata.get('issuer')!r}, "
                f"expected {issuer.issuer!r}",
                hint="the operator must configure the provider's exact issuer identifier",
            )
        try:
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                check_provider_url(f"{issuer.name}: {key}", str(metadata.get(key)))
            if metadata.get("userinfo_endpoint"):
                check_provider_url(
                    f"{issuer.name}: userinfo_endpoint", metadata["userinfo_endpoint"]
                )
        except ConfigError as error:
            raise Unavailable(error.message, hint=error.hint) from None
        return metadata

    def _exchange(
        self, client: Any, issuer: OidcIssuer, pending: PendingLogin, code: str
    ) -> dict[str, Any]:
        try:
            return client.fetch_access_token(
                redirect_uri=pending.redirect_uri,
                code=code,
                code_verifier=pending.code_verifier,
            )
        except OAuthError as error:
            raise Unauthorized(
                f"{issuer.name}: the provider refused the authorization code: {error.error}"
                + (f" ({error.description})" if error.description else ""),
                hint="start again from /auth/login (a code works once, for the login it "
                "was issued to)",
            ) from None
        except (requests.RequestException, ValueError) as error:
            raise _unreachable(issuer, error) from None

    def _verify_id_token(
        self, client: Any, issuer: OidcIssuer, pending: PendingLogin, token: dict[str, Any]
    ) -> dict[str, Any]:
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise _bad_id_token(issuer, "the token response has no ID token")
        algorithm = _jws_algorithm(id_token)
        if algorithm not in ID_TOKEN_ALGORITHMS:
            raise _bad_id_token(issuer, f"signing algorithm {algorithm!r} is not accepted")
        try:
            claims = client.parse_id_token(
                token,
                nonce=pending.nonce,
                claims_options={
                    "iss": {"essential": True, "value": issuer.issuer},
                    "aud": {"essential": True, "value": issuer.client_id},
                    "sub": {"essential": True},
                },
                leeway=LEEWAY_S,
            )
        except (JoseError, ValueError) as error:
            raise _bad_id_token(issuer, str(error)) from None
        except requests.RequestException as error:
            raise _unreachable(issuer, error) from None
        claims = dict(claims)
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise _bad_id_token(issuer, "the subject is missing")
        return claims

    def _userinfo(
        self,
        client: Any,
        issuer: OidcIssuer,
        metadata: dict[str, Any],
        token: dict[str, Any],
        claims: dict[str, Any],
    ) -> dict[str, Any]:
        if all(k in claims for k in USERINFO_CLAIMS) or not metadata.get("userinfo_endpoint"):
            return {}
        try:
            userinfo = dict(client.userinfo(token=token))
        except (requests.RequestException, ValueError, OAuthError) as error:
            raise _unreachable(issuer, error) from None
        if userinfo.get("sub") != claims["sub"]:
            raise _bad_id_token(issuer, "userinfo describes another subject than the ID token")
        return userinfo


def init_oidc(app: Flask, issuers: tuple[OidcIssuer, ...]) -> OidcProviders:
    providers = OidcProviders(issuers)
    providers.init_app(app)
    return providers


def oidc_providers() -> OidcProviders:
    return current_app.extensions["oidc"]


def _check_response_issuer(issuer: OidcIssuer, metadata: dict[str, Any], iss: str | None) -> None:
    """RFC 9207: the answer names who sent it; it must be the provider this login went to."""
    if iss is None and not metadata.get("authorization_response_iss_parameter_supported"):
        return
    if iss != issuer.issuer:
        raise Unauthorized(
            f"{issuer.name}: the answer comes from issuer {iss!r}, but this login was sent to "
            f"{issuer.issuer!r}",
            hint="nothing was changed; start again from /auth/login (a login answered by "
            "another provider than the one it went to is refused)",
        )


def _auth_time(
    issuer: OidcIssuer, pending: PendingLogin, claims: dict[str, Any]
) -> datetime | None:
    auth_time = claims.get("auth_time")
    if auth_time is None:
        if pending.max_age is not None:
            raise _bad_id_token(issuer, "max_age was asked but the ID token has no auth_time")
        return None
    if not isinstance(auth_time, int | float) or isinstance(auth_time, bool):
        raise _bad_id_token(issuer, "auth_time is not a number")
    now = time.time()
    if auth_time > now + LEEWAY_S:
        raise _bad_id_token(issuer, "auth_time is in the future")
    if pending.max_age is not None and now - auth_time > pending.max_age + LEEWAY_S:
        raise Unauthorized(
            f"{issuer.name}: the provider did not re-authenticate you (last login "
            f"{int(now - auth_time)} s ago, at most {pending.max_age} s was asked)",
            hint="log in again at your institution, then retry",
        )
    return datetime.fromtimestamp(min(auth_time, now), UTC)


def _jws_algorithm(token: str) -> str | None:
    try:
        header = token.split(".", 1)[0]
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, binascii.Error):
        return None
    return decoded.get("alg") if isinstance(decoded, dict) else None


def _bad_id_token(issuer: OidcIssuer, what: str) -> Unauthorized:
    log.warning("login refused: %s: ID token: %s", issuer.name, what)
    return Unauthorized(
        f"{issuer.name}: the ID token failed verification: {what}",
        hint="nothing was changed; start again from /auth/login. If it persists, the provider "
        "or something between it and the broker is misbehaving: tell the operator",
    )


def _unreachable(issuer: OidcIssuer, error: Exception) -> Unavailable:
    log.warning("OpenID Provider %s: %s: %s", issuer.name, type(error).__name__, error)
    return Unavailable(
        f"{issuer.name}: the identity provider at {issuer.issuer} could not be reached "
        f"({type(error).__name__})",
        hint="retry in a moment; if it persists, tell the operator",
    )
