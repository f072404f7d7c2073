"""The logins `escrow login` stored: one per broker, in `<config dir>/credentials.json` (0600,
in a 0700 directory, replaced atomically).

Each login holds an access token (an hour), a refresh token (until the login session ends) and
the access token's expiry. `token_for(broker)` hands out the access token and refreshes it first
when it is about to expire. Refreshing spends the refresh token (the broker rotates it, and
ends the whole login if a spent one comes back), so refreshes of one config dir are serialised
by a lock file and the winner's new pair is what the others then read.

Tokens are never printed, logged or put into an error; `StoredLogin`'s repr leaves them out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from broker.client import oauth
from broker.client.http import BrokerClient
from broker.client.local import config_dir, private_dir, write_private
from broker.client.pins import broker_id
from broker.errors import EscrowError, Unauthorized

CREDENTIALS_FILE = "credentials.json"
LOCK_FILE = ".credentials.lock"
# Refresh this long before expiry, so a token is not refused on its way to the broker.
EXPIRY_MARGIN = timedelta(seconds=60)


@dataclass(frozen=True)
class StoredLogin:
    broker: str  # broker_id: scheme://host[:port]
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime  # of the access token
    user: str = ""  # who logged in, for people to read (email or name)

    def fresh(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) < self.expires_at - EXPIRY_MARGIN

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at.isoformat(),
            "user": self.user,
        }


def credentials_path(directory: Path | None = None) -> Path:
    return (directory or config_dir()) / CREDENTIALS_FILE


def load(directory: Path | None = None) -> dict[str, StoredLogin]:
    path = credentials_path(directory)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {name: _parse(name, entry) for name, entry in data.items()}
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise EscrowError(
            f"stored logins file {path} is damaged",
            hint=f"remove it and log in again: rm {path}; escrow login BROKER",
        ) from None


def _parse(name: str, entry: dict[str, Any]) -> StoredLogin:
    expires_at = datetime.fromisoformat(entry["expires_at"])
    if expires_at.tzinfo is None:
        raise ValueError("naive expiry")
    return StoredLogin(
        name,
        str(entry["access_token"]),
        str(entry["refresh_token"]),
        expires_at,
        str(entry.get("user", "")),
    )


def get(broker_url: str, directory: Path | None = None) -> StoredLogin | None:
    return load(directory).get(broker_id(broker_url))


def store(
    broker_url: str, token_response: dict[str, Any], user: str = "", directory: Path | None = None
) -> StoredLogin:
    """Keep a token response (RFC 6749 §5.1) as the login at this broker."""
    with _locked(directory):
        return _store(broker_url, token_response, user, directory)


def _store(
    broker_url: str, token_response: dict[str, Any], user: str, directory: Path | None
) -> StoredLogin:
    try:
        login = StoredLogin(
            broker=broker_id(broker_url),
            access_token=str(token_response["access_token"]),
            refresh_token=str(token_response["refresh_token"]),
            expires_at=datetime.now(UTC) + timedelta(seconds=int(token_response["expires_in"])),
            user=user,
        )
    except (KeyError, TypeError, ValueError):
        raise EscrowError(
            "the broker's token answer lacks access_token, refresh_token or expires_in",
            hint="check that the URL points at an escrow broker",
        ) from None
    _write({**load(directory), login.broker: login}, directory)
    return login


def label(broker_url: str, user: str, directory: Path | None = None) -> None:
    """Record who a stored login belongs to (shown by `escrow whoami` when offline)."""
    with _locked(directory):
        logins = load(directory)
        name = broker_id(broker_url)
        if name in logins:
            old = logins[name]
            logins[name] = StoredLogin(
                old.broker, old.access_token, old.refresh_token, old.expires_at, user
            )
            _write(logins, directory)


def remove(
    broker_url: str,
    directory: Path | None = None,
    revoke: Callable[[StoredLogin], None] | None = None,
) -> StoredLogin | None:
    """Forget the login at this broker and return it (None if there was none). `revoke` is
    called first, under the lock (so no refresh can swap the tokens meanwhile); if it raises,
    the login is kept."""
    with _locked(directory):
        logins = load(directory)
        login = logins.get(broker_id(broker_url))
        if login is None:
            return None
        if revoke is not None:
            revoke(login)
        del logins[login.broker]
        _write(logins, directory)
        return login


def token_for(
    broker_url: str, directory: Path | None = None, client: BrokerClient | None = None
) -> str | None:
    """The access token of the stored login at this broker (refreshed first if it expires
    within a minute), or None when there is no stored login."""
    login = get(broker_url, directory)
    if login is None or login.fresh():
        return login.access_token if login else None
    with _locked(directory):
        login = get(broker_url, directory)  # another command may have refreshed meanwhile
        if login is None or login.fresh():
            return login.access_token if login else None
        try:
            answer = oauth.refresh(client or BrokerClient(broker_url), login.refresh_token)
        except oauth.OAuthError as error:
            if error.error != "invalid_grant":
                raise
            logins = load(directory)
            logins.pop(login.broker, None)
            _write(logins, directory)
            raise Unauthorized(
                f"your login at {login.broker} has ended (logged out, expired or revoked)",
                hint=f"log in again: escrow login {login.broker}",
            ) from None
        return _store(broker_url, answer, login.user, directory).access_token


def _write(logins: dict[str, StoredLogin], directory: Path | None) -> None:
    data = {name: login.to_json() for name, login in sorted(logins.items())}
    write_private(
        credentials_path(directory), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    )


@contextlib.contextmanager
def _locked(directory: Path | None) -> Iterator[None]:
    """An exclusive lock on the stored logins, held across a read-refresh-write."""
    lock_path = private_dir(directory or config_dir()) / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
