"""The CLI's side of OAuth with the broker: device authorization and polling (RFC 8628),
refresh (RFC 6749 §6) and revocation (RFC 7009).

These endpoints take form-encoded bodies and answer RFC 6749 JSON errors (`{"error": …}`), not
problem+json, so they are called through the `BrokerClient`'s connection pool here rather than
its JSON methods. A request that may have reached the broker is not sent again: a device code
and a refresh token work only once, so a blind retry could only fail (or, for a refresh token,
look like a stolen copy and end the login).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.exceptions import HTTPError as Urllib3Error

from broker.client.http import (
    USER_AGENT,
    BrokerClient,
    BrokerError,
    BrokerUnreachable,
    _retrying,
    _Transient,
    broker_transient,
)
from broker.client.http_errors import reason_of
from broker.errors import EscrowError

CLIENT_ID = "escrow-cli"
DEVICE_CODE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
SLOW_DOWN_STEP_S = 5  # RFC 8628 §3.5


class OAuthError(EscrowError):
    """The broker refused an OAuth request: the RFC 6749 `error` code and its description."""

    title = "login refused"

    def __init__(self, status: int, error: str, description: str, *, hint: str = "") -> None:
        super().__init__(description or error, hint=hint)
        self.status = status
        self.error = error


def device_authorization(client: BrokerClient) -> dict[str, Any]:
    """Start a device login: device_code (secret), user_code, verification_uri(_complete),
    expires_in, interval."""
    answer = _post_form(
        client, "/oauth/device_authorization", {"client_id": CLIENT_ID}, replayable=True
    )
    for field, kind in (
        ("device_code", str),
        ("user_code", str),
        ("verification_uri", str),
        ("expires_in", int),
        ("interval", int),
    ):
        if not isinstance(answer.get(field), kind):
            raise BrokerError(
                200,
                "unexpected answer",
                f"the device authorization answer has no {field}",
                hint=f"check that {client.base_url} is an escrow broker",
            )
    return answer


def wait_for_approval(
    client: BrokerClient,
    started: Mapping[str, Any],
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll the token endpoint at the broker's interval until the code is approved (the token
    response), denied or expired (an `OAuthError` with a hint)."""
    interval = max(1, int(started["interval"]))
    # The broker says expired_token at expiry; the local deadline only guards against a broker
    # that never does.
    deadline = clock() + int(started["expires_in"]) + 60
    while clock() < deadline:
        sleep(interval)
        try:
            return _post_form(
                client,
                "/oauth/token",
                {
                    "grant_type": DEVICE_CODE_GRANT_TYPE,
                    "device_code": started["device_code"],
                    "client_id": CLIENT_ID,
                },
                replayable=False,
            )
        except OAuthError as error:
            if error.error == "authorization_pending":
                continue
            if error.error == "slow_down":
                interval += SLOW_DOWN_STEP_S
                continue
            raise _explain(error) from None
    raise OAuthError(
        400,
        "expired_token",
        "the code expired before it was approved",
        hint="run `escrow login` again and approve the new code within 10 minutes",
    )


def refresh(client: BrokerClient, refresh_token: str) -> dict[str, Any]:
    return _post_form(
        client,
        "/oauth/token",
        {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": CLIENT_ID},
        replayable=False,
    )


def revoke(client: BrokerClient, token: str, hint: str = "refresh_token") -> None:
    _post_form(
        client,
        "/oauth/revoke",
        {"token": token, "token_type_hint": hint, "client_id": CLIENT_ID},
        replayable=True,
    )


def _explain(error: OAuthError) -> OAuthError:
    hints = {
        "access_denied": "the login was denied in the browser; run `escrow login` again if "
        "that was a mistake",
        "expired_token": "run `escrow login` again and approve the new code within 10 minutes",
        "invalid_grant": "run `escrow login` again",
    }
    return OAuthError(
        error.status, error.error, error.message, hint=hints.get(error.error, error.hint)
    )


def _post_form(
    client: BrokerClient, path: str, fields: Mapping[str, str], *, replayable: bool
) -> dict[str, Any]:
    body = urlencode(fields).encode()
    headers = {
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    url = client.base_url + path

    def attempt() -> urllib3.BaseHTTPResponse:
        try:
            response = client.pool.request(
                "POST", url, body=body, headers=headers, timeout=client.api_timeout, redirect=False
            )
        except (NewConnectionError, ConnectTimeoutError) as error:
            client.refused_on_first_contact(error)
            raise _Transient(f"no answer: {reason_of(error)}") from None  # never sent: safe again
        except (Urllib3Error, OSError) as error:
            if replayable:
                raise _Transient(f"no answer: {reason_of(error)}") from None
            raise BrokerUnreachable(
                f"the broker at {client.base_url} went away during {path}: {reason_of(error)}",
                hint="run the same command again (a login that was cut off needs "
                "`escrow login` again)",
            ) from None
        client.answered = True
        transient = broker_transient(response, client.base_url)
        if transient is not None:
            raise transient
        return response

    response = _retrying(
        client.retry,
        f"the broker at {client.base_url}",
        attempt,
        client.on_retry,
        client.hint_when_gone,
    )
    return _decode(client, path, response)


def _decode(client: BrokerClient, path: str, response: urllib3.BaseHTTPResponse) -> dict[str, Any]:
    try:
        payload = json.loads(response.data or b"null")
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise BrokerError(
            response.status,
            "unexpected answer",
            f"POST {path} answered HTTP {response.status} without a JSON object",
            hint=f"check that {client.base_url} is an escrow broker",
        )
    if 200 <= response.status < 300:
        return payload
    error = payload.get("error")
    if isinstance(error, str):
        raise OAuthError(response.status, error, str(payload.get("error_description") or error))
    title = str(payload.get("title") or "error")
    raise BrokerError(
        response.status, title, str(payload.get("detail") or title), str(payload.get("hint") or "")
    )
