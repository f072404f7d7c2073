"""Access tests: a policy directory of their own, a lab that deposits through the API, and
researchers with proven keys and signed NDAs, made through the API as a person would."""

from __future__ import annotations

import io
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from access_support import POLICY, QUICK_POLICY, RENEWABLE_POLICY, WEIGHTS
from api_deposit import deposit, depositor_token

from broker import age

REPO_NDAS = Path(__file__).resolve().parents[2] / "policies" / "ndas"
NDA_ID = "acme-research-nda"


AUTO_POLICY = """\
organisation: acme-ai
models: ["acme-ai/auto-*"]
nda: {id: acme-research-nda, min_version: 1}
approvals: {auto: true}
grant: {default_days: 7, max_days: 10, releases_per_file: 1}
"""


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    (directory / "ndas").mkdir(parents=True)
    shutil.copy(REPO_NDAS / "acme-research-nda-v1.md", directory / "ndas")
    (directory / "acme-ai.yaml").write_text(POLICY)
    (directory / "acme-ai-auto.yaml").write_text(AUTO_POLICY)
    (directory / "acme-ai-renewable.yaml").write_text(RENEWABLE_POLICY)
    (directory / "acme-ai-quick.yaml").write_text(QUICK_POLICY)
    return directory


@pytest.fixture
def settings(settings, policy_dir):
    return settings.with_overrides(policy_dir=policy_dir)


# --- the lab: deposits through the API, sealed by the worker ---------------------------------


@dataclass
class Lab:
    client: object
    escrow: object
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, path: str, body: dict | None = None):
        return self.client.post(path, json=body or {}, headers=self.auth)

    def deposit(self, files: dict[str, bytes], model: str = "acme-ai/gpt-small",
                version: str = "2024-05", seal: bool = True) -> dict:
        """Open, encrypt and upload every file as the lab's CLI would, finalise, seal."""
        return deposit(self.client, self.escrow, self.token, files, model, version, seal)


@pytest.fixture
def lab(escrow, client) -> Lab:
    return Lab(client=client, escrow=escrow, token=depositor_token(escrow))




@pytest.fixture
def sealed(lab) -> dict:
    """acme-ai/gpt-small@2024-05, sealed, with two files."""
    return lab.deposit(WEIGHTS)


# --- people -----------------------------------------------------------------------------------


@dataclass
class Actor:
    client: object
    token: str
    user_id: str
    identities: list = field(default_factory=list)  # age identities of proven keys
    keys: list = field(default_factory=list)  # their key ids

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str):
        return self.client.get(path, headers=self.auth)

    def post(self, path: str, body: dict | None = None):
        return self.client.post(path, json=body or {}, headers=self.auth)

    def add_key(self, post_quantum: bool = False) -> str:
        """Register a fresh age key and prove it (decrypting the challenge)."""
        identity = age.generate_hybrid_identity() if post_quantum else \
            age.generate_x25519_identity()
        made = self.post("/api/v1/me/keys", {"recipient": identity.to_recipient().encode()})
        assert made.status_code == 201, made.json
        out = io.BytesIO()
        age.decrypt(io.BytesIO(made.json["challenge"].encode()), out, [identity])
        secret = re.search(r"^secret: ([0-9a-f]{64})$", out.getvalue().decode(), re.M).group(1)
        proven = self.post(f"/api/v1/me/keys/{made.json['id']}/proof", {"response": secret})
        assert proven.status_code == 200 and proven.json["state"] == "proven", proven.json
        self.identities.append(identity)
        self.keys.append(made.json["id"])
        return made.json["id"]

    def sign_nda(self) -> None:
        text = self.client.get(f"/api/v1/ndas/{NDA_ID}").json
        signed = self.post(f"/api/v1/ndas/{NDA_ID}/signatures", {
            "version": text["version"], "sha256": text["sha256"], "typed_name": "Rosa Example"})
        assert signed.status_code == 201, signed.json

    def ask(self, model: str = "acme-ai/gpt-small", version: str = "2024-05", **extra):
        return self.post("/api/v1/requests", {"model": model, "version": version,
                                              "purpose": "interpretability study", **extra})


@pytest.fixture
def person(client, make_person):
    """person(email, roles=()) -> an Actor logged in just now."""

    def make(email: str, roles: tuple[tuple[str, str], ...] = ()) -> Actor:
        made = make_person(email, roles)
        return Actor(client, made.token, str(made.user_id))

    return make


@pytest.fixture
def researcher(person) -> Actor:
    """A researcher eligible under the test policy: a proven key and the NDA signed."""
    rosa = person("rosa@uni.example")
    rosa.add_key()
    rosa.sign_nda()
    return rosa


@pytest.fixture
def reviewer(person) -> Actor:
    return person("rita@acme.example", (("acme-ai", "reviewer"),))


def audit_events(escrow, action: str) -> list[dict]:
    from sqlalchemy import select

    from broker.adapters.db.models import AuditEvent

    with escrow.uow() as uow:
        leaves = uow.session.scalars(
            select(AuditEvent.leaf).where(AuditEvent.action == action).order_by(AuditEvent.seq))
        return [json.loads(leaf) for leaf in leaves]


@pytest.fixture
def events(escrow):
    """events(action) -> the audit leaves of that action, oldest first."""
    return lambda action: audit_events(escrow, action)


@pytest.fixture
def fresh(escrow, tmp_path):
    """The same data directory, store and master key, with a new empty database (as after
    `escrow init` on a new database server): where recovery from the bucket is tested."""
    from broker.services.setup import initialise

    url = f"sqlite:///{tmp_path / 'recovered.db'}"
    made, _ = initialise(escrow.settings.with_overrides(database_url=url))
    yield made
    made.engine.dispose()
