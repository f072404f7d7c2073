"""People for API tests: users logged in through a real login session and user token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from broker.domain.principals import OPERATOR
from broker.services import admin, people, sessions


@dataclass
class Person:
    user_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_person(escrow):
    """A factory: a user (with optional roles) and a bearer token of a fresh login."""

    def make(email: str, org_roles: tuple[tuple[str, str], ...] = (),
             global_roles: tuple[str, ...] = ()) -> Person:
        with escrow.uow() as uow:
            user = people.upsert_user(
                uow, OPERATOR, "https://idp.uni.example", email,
                people.Claims(email=email, email_verified=True, name=email.split("@")[0]),
            )
            for org, role in org_roles:
                if admin.find_org(uow, org) is None:
                    admin.create_org(uow, OPERATOR, org)
                people.grant_org_role(uow, OPERATOR, user, org, role)
            for role in global_roles:
                people.grant_global_role(uow, OPERATOR, user, role)
            session = sessions.start_session(uow, user, "device", user.issuer, datetime.now(UTC))
            pair = sessions.issue_tokens(uow, session)
            uow.commit()
            return Person(str(user.id), pair.access_token)

    return make
