"""The OAuth endpoints' answers, as RFC 8628 and RFC 6749 define them (not problem+json)."""

from __future__ import annotations

from typing import NotRequired

from typing_extensions import TypedDict


class DeviceStart(TypedDict):
    """RFC 8628 §3.2: a CLI login started; `device_code` is shown only here."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


class TokenAnswer(TypedDict):
    """RFC 6749 §5.1: an access token and the refresh token that replaces it."""

    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str


class Revoked(TypedDict):
    """RFC 7009 §2.2: the token no longer works (an empty object)."""


class OAuthErrorAnswer(TypedDict):
    """RFC 6749 §5.2: an error code and, mostly, a description."""

    error: str
    error_description: NotRequired[str]
