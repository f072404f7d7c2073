"""A small world for page tests, made the way people make it: a lab with a sealed deposit
(encrypted and uploaded through the API, sealed by the worker), a policy directory, and people
with roles, a proven key and a signed NDA.

Plain functions (no fixtures), so that the page tests (tests/web) and the browser tests
(tests/browser) share them; both import this module as `web.seed` (tests/ is on sys.path).
"""

from __future__ import annotations

import io
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from api_deposit import deposit, depositor_token

from broker import age
from broker.domain.principals import OPERATOR
from broker.services import admin, people, sessions

REPO_NDAS = Path(__file__).resolve().parents[2] / "policies" / "ndas"
NDA_ID = "acme-research-nda"
__all__ = ["deposit", "depositor_token"]  # re-exported: web and browser tests seed with them

ISSUER = "https://idp.uni.example"

POLICY = """\
# the page tests' policy: one approval by a reviewer of acme-ai, the NDA, a proven key
organisation: acme-ai
models: ["acme-ai/*"]
description: Research access to Acme AI model weights.
nda: {id: acme-research-nda, min_version: 1}
eligibility: {verified_email: true, proven_key: true}
approvals: {count: 1, role: reviewer}
grant: {default_days: 14, max_days: 30, releases_per_file: 2, renewal: true}
"""


def make_policy_dir(directory: Path) -> Path:
    (directory / "ndas").mkdir(parents=True)
    shutil.copy(REPO_NDAS / "acme-research-nda-v1.md", directory / "ndas")
    (directory / "acme-ai.yaml").write_text(POLICY)
    return directory


# --- the lab ------------------------------------------------------------------------------------


# --- people -------------------------------------------------------------------------------------


@dataclass
class Login:
    user_id: int
    session_id: str  # what the browser's cookie holds
    token: str  # a bearer token of the same login, for API calls made "from a terminal"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_login(escrow, email: str, name: str, org_roles: tuple[tuple[str, str], ...] = (),
               global_roles: tuple[str, ...] = ()) -> Login:
    """A person (created if need be) with these roles, logged in just now."""
    with escrow.uow() as uow:
        user = people.upsert_user(uow, OPERATOR, ISSUER, email,
                                  people.Claims(email=email, email_verified=True, name=name))
        for org, role in org_roles:
            if admin.find_org(uow, org) is None:
                admin.create_org(uow, OPERATOR, org)
            people.grant_org_role(uow, OPERATOR, user, org, role)
        for role in global_roles:
            people.grant_global_role(uow, OPERATOR, user, role)
        session = sessions.start_session(uow, user, "web", ISSUER, datetime.now(UTC))
        token = sessions.issue_tokens(uow, session).access_token
        uow.commit()
        return Login(user.id, session.id, token)


def add_proven_key(client, auth: dict[str, str]) -> str:
    """Register a fresh age key and prove it by decrypting the challenge; the key id."""
    identity = age.generate_x25519_identity()
    made = client.post("/api/v1/me/keys", headers=auth,
                       json={"recipient": identity.to_recipient().encode()})
    assert made.status_code == 201, made.json
    out = io.BytesIO()
    age.decrypt(io.BytesIO(made.json["challenge"].encode()), out, [identity])
    secret = re.search(r"^secret: ([0-9a-f]{64})$", out.getvalue().decode(), re.M).group(1)
    proven = client.post(f"/api/v1/me/keys/{made.json['id']}/proof", headers=auth,
                         json={"response": secret})
    assert proven.status_code == 200 and proven.json["state"] == "proven", proven.json
    return made.json["id"]


def sign_nda(client, auth: dict[str, str], name: str = "Rosa Example") -> None:
    text = client.get(f"/api/v1/ndas/{NDA_ID}").json
    signed = client.post(f"/api/v1/ndas/{NDA_ID}/signatures", headers=auth, json={
        "version": text["version"], "sha256": text["sha256"], "typed_name": name})
    assert signed.status_code == 201, signed.json


def make_login_link(escrow) -> str:
    """A single-use login link for Ada (made if need be), as `escrow admin login-link` makes."""
    with escrow.uow() as uow:
        user = people.upsert_user(uow, OPERATOR, ISSUER, "ada-sub",
                                  people.Claims(email="ada@uni.example", name="Ada"))
        secret = sessions.create_login_link(uow, OPERATOR, user)
        uow.commit()
    return secret
