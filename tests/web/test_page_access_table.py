"""Every page, opened by every kind of person, against one table of expectations.

200: the page; LOGIN: a redirect to the login page; 403: the page naming the role needed. A page
route missing from the table fails the test, so a new page cannot land without its row.
"""

from __future__ import annotations

import re

import pytest

OK, LOGIN, FORBIDDEN = 200, 302, 403
IDENTITIES = ("anonymous", "researcher", "reviewer", "org_admin", "other_admin", "auditor",
              "operator")


def row(default: int, **overrides: int) -> dict[str, int]:
    return {identity: overrides.get(identity, default) for identity in IDENTITIES}


PUBLIC = row(OK)
PERSON = row(OK, anonymous=LOGIN)
LAB = row(FORBIDDEN, anonymous=LOGIN, reviewer=OK, org_admin=OK, other_admin=OK)
ORG_REVIEWERS = row(FORBIDDEN, anonymous=LOGIN, reviewer=OK, org_admin=OK)
ORG_ADMINS = row(FORBIDDEN, anonymous=LOGIN, org_admin=OK, operator=OK)
OPERATORS = row(FORBIDDEN, anonymous=LOGIN, operator=OK)
AUDITORS = row(FORBIDDEN, anonymous=LOGIN, auditor=OK, operator=OK)

TABLE = {
    "/": PUBLIC,
    "/ndas/{nda_id}": PUBLIC,
    "/agreements/{org}/{model}/{version}": PUBLIC,
    "/me": PERSON,
    "/device": PERSON,
    "/requests": PERSON,
    "/request/{org}/{model}/{version}": PERSON,
    # only the grant's holder (tests/hosted/test_chat_page.py); nobody here holds grant gr_0…
    "/me/chat/{grant_id}": row(404, anonymous=LOGIN),
    "/studies": PERSON,
    # whoever may see the study (tests/web/test_study_pages.py); nobody sees st_0…, none such
    "/studies/{study}": row(404, anonymous=LOGIN),
    "/lab": LAB,
    "/lab/reviews": LAB,
    "/lab/{org}/grants": ORG_REVIEWERS,
    "/lab/{org}/usage": ORG_REVIEWERS,
    "/lab/{org}/deposits": ORG_REVIEWERS,
    "/lab/{org}/members": ORG_ADMINS,
    "/lab/{org}/studies": row(FORBIDDEN, anonymous=LOGIN, org_admin=OK),  # no operators
    "/operator": OPERATORS,
    "/audit": AUDITORS,
    "/audit/events/{seq}": AUDITORS,
    "/audit/verify": AUDITORS,
}
# /v1/: the OpenAI-compatible API (its access is tested in tests/hosted: a person with an
# inference grant on that version, nobody else)
NOT_PAGES = ("/api/", "/v1/", "/auth/", "/oauth/", "/store/", "/static/", "/healthz")


def page_routes(app) -> set[str]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods and not rule.rule.startswith(NOT_PAGES):
            routes.add(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
    return routes


def test_the_table_names_every_page(app):
    assert page_routes(app) == set(TABLE)


@pytest.fixture
def people(visitor) -> dict:
    return {
        "anonymous": visitor(),
        "researcher": visitor("rosa@uni.example"),
        "reviewer": visitor("rita@acme.example", org_roles=(("acme-ai", "reviewer"),)),
        "org_admin": visitor("ada@acme.example", org_roles=(("acme-ai", "admin"),)),
        "other_admin": visitor("olaf@other.example", org_roles=(("other-lab", "admin"),)),
        "auditor": visitor("audrey@audit.example", global_roles=("auditor",)),
        "operator": visitor("otto@escrow.example", global_roles=("operator",)),
    }


def test_every_page_answers_every_person_as_the_table_says(people, sealed):
    values = {"nda_id": "acme-research-nda", "org": "acme-ai", "model": "gpt-small",
              "version": "2024-05", "seq": "0", "grant_id": "gr_0000000000000000",
              "study": "st_0000000000000000"}
    mismatches = []
    for path, expected in sorted(TABLE.items()):
        url = path.format(**values)
        for identity, who in people.items():
            response = who.get(url)
            if response.status_code != expected[identity]:
                mismatches.append(f"{url} as {identity}: {response.status_code}, "
                                  f"expected {expected[identity]}")
            elif response.status_code == LOGIN:
                assert response.headers["Location"].startswith("/auth/login?next=")
            elif response.status_code == FORBIDDEN:
                assert 'id="needed-role"' in response.get_data(as_text=True), url
    assert mismatches == []
