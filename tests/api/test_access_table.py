"""Every API route, called by every kind of identity, against one table of expectations.

"ok" means the identity got past authorization (any answer but 401/403: the bodies sent are
empty, so 4xx validation errors are expected). A route missing from the table fails the test,
so a new route cannot land without its row.
"""

from __future__ import annotations

import re

import pytest

OK, NO_LOGIN, FORBIDDEN = "ok", 401, 403
BODY = {"model": "acme-ai/gpt-small", "version": "2"}  # names the org a deposit call is about
IDENTITIES = ("anonymous", "service_depositor", "depositor", "reviewer", "org_admin",
              "other_admin", "researcher", "auditor", "operator")
PERSONS = {i: "ok" for i in IDENTITIES if i not in ("anonymous", "service_depositor")}


def row(default, **overrides):
    return {identity: overrides.get(identity, default) for identity in IDENTITIES}


PUBLIC = row(OK)
ANY_IDENTITY = row(OK, anonymous=NO_LOGIN)
PERSON_ONLY = row(OK, anonymous=NO_LOGIN, service_depositor=NO_LOGIN)
DEPOSITOR = row(FORBIDDEN, anonymous=NO_LOGIN, service_depositor=OK, depositor=OK)
DEPOSIT_READERS = row(FORBIDDEN, anonymous=NO_LOGIN, service_depositor=OK, depositor=OK,
                      reviewer=OK, org_admin=OK)
ORG_ADMIN = row(FORBIDDEN, anonymous=NO_LOGIN, org_admin=OK, operator=OK)
OPERATOR = row(FORBIDDEN, anonymous=NO_LOGIN, operator=OK)
AUDITORS = row(FORBIDDEN, anonymous=NO_LOGIN, auditor=OK, operator=OK)
AUDIT_READERS = row(OK, anonymous=NO_LOGIN, service_depositor=FORBIDDEN)  # each sees their own
LAB_ADMIN = row(FORBIDDEN, anonymous=NO_LOGIN, org_admin=OK)  # the lab itself: no operator
AGREEMENT_ATTACH = row(FORBIDDEN, anonymous=NO_LOGIN, service_depositor=OK, depositor=OK,
                       org_admin=OK)  # the deposit is open: the depositor attaches with it
AGREEMENT = "/api/v1/agreements/{org}/{model}/{version}"

TABLE = {
    ("GET", "/api/v1/keys"): PUBLIC,
    ("GET", "/api/v1/openapi.json"): PUBLIC,
    ("GET", "/api/v1/models"): PUBLIC,
    ("GET", "/api/v1/ndas"): PUBLIC,
    ("GET", "/api/v1/ndas/{nda_id}"): PUBLIC,
    ("GET", "/api/v1/me"): ANY_IDENTITY,
    ("POST", "/api/v1/deposits"): DEPOSITOR,
    ("GET", "/api/v1/deposits/{deposit_id}"): DEPOSIT_READERS,
    ("POST", "/api/v1/deposits/{deposit_id}/files/{index}/upload"): DEPOSITOR,
    ("POST", "/api/v1/deposits/{deposit_id}/files/{index}/parts"): DEPOSITOR,
    ("PUT", "/api/v1/deposits/{deposit_id}/files/{index}/header"): DEPOSITOR,
    ("POST", "/api/v1/deposits/{deposit_id}/files/{index}/complete"): DEPOSITOR,
    ("POST", "/api/v1/deposits/{deposit_id}/finalize"): DEPOSITOR,
    ("GET", "/api/v1/me/keys"): PERSON_ONLY,
    ("POST", "/api/v1/hosted/keys"): PERSON_ONLY,  # a person's API keys of their grants
    ("GET", "/api/v1/hosted/keys"): PERSON_ONLY,
    ("DELETE", "/api/v1/hosted/keys/{key_id}"): PERSON_ONLY,
    ("POST", "/api/v1/me/keys"): PERSON_ONLY,
    ("GET", "/api/v1/me/keys/{key_id}"): PERSON_ONLY,
    ("DELETE", "/api/v1/me/keys/{key_id}"): PERSON_ONLY,
    ("POST", "/api/v1/me/keys/{key_id}/challenge"): PERSON_ONLY,
    ("POST", "/api/v1/me/keys/{key_id}/proof"): PERSON_ONLY,
    ("GET", "/api/v1/me/nda-signatures"): PERSON_ONLY,
    ("POST", "/api/v1/ndas/{nda_id}/signatures"): PERSON_ONLY,
    ("GET", "/api/v1/orgs/{org}/members"): ORG_ADMIN,
    ("POST", "/api/v1/orgs/{org}/members"): ORG_ADMIN,
    ("DELETE", "/api/v1/orgs/{org}/members"): ORG_ADMIN,
    ("POST", "/api/v1/roles"): OPERATOR,
    ("DELETE", "/api/v1/roles"): OPERATOR,
    ("POST", "/api/v1/requests"): PERSON_ONLY,
    ("GET", "/api/v1/requests"): PERSON_ONLY,
    ("POST", "/api/v1/requests/explain"): PERSON_ONLY,
    ("GET", "/api/v1/requests/{request_id}"): PERSON_ONLY,
    ("POST", "/api/v1/requests/{request_id}/approve"): PERSON_ONLY,
    ("POST", "/api/v1/requests/{request_id}/deny"): PERSON_ONLY,
    ("POST", "/api/v1/requests/{request_id}/withdraw"): PERSON_ONLY,
    ("GET", "/api/v1/reviews"): PERSON_ONLY,
    ("GET", "/api/v1/grants"): PERSON_ONLY,
    ("POST", "/api/v1/grants/{grant_id}/revoke"): PERSON_ONLY,
    ("POST", "/api/v1/grants/{grant_id}/renew"): PERSON_ONLY,
    ("POST", "/api/v1/grants/{grant_id}/files/{index}/release"): PERSON_ONLY,
    ("GET", "/api/v1/grants/{grant_id}/manifest"): PERSON_ONLY,
    ("GET", "/api/v1/grants/{grant_id}/closeout"): PERSON_ONLY,
    ("POST", "/api/v1/grants/{grant_id}/closeout"): PERSON_ONLY,
    ("POST", "/api/v1/quarantine/{org}/{model}/{version}"): OPERATOR,
    ("DELETE", "/api/v1/quarantine/{org}/{model}/{version}"): OPERATOR,
    ("GET", "/api/v1/audit/checkpoint"): PUBLIC,
    ("GET", "/api/v1/audit/consistency"): PUBLIC,
    ("GET", "/api/v1/audit/inclusion"): PUBLIC,
    ("GET", "/api/v1/audit/entries"): AUDITORS,
    ("GET", "/api/v1/audit/events"): AUDIT_READERS,
    ("GET", "/api/v1/audit/events/{seq}"): AUDIT_READERS,
    ("GET", "/api/v1/audit/export"): AUDIT_READERS,
    ("GET", AGREEMENT): PUBLIC,
    ("PUT", AGREEMENT): AGREEMENT_ATTACH,
    ("DELETE", AGREEMENT): AGREEMENT_ATTACH,
    ("GET", AGREEMENT + "/vote-message"): PUBLIC,
    ("POST", AGREEMENT + "/votes"): PERSON_ONLY,
    ("POST", AGREEMENT + "/vote-challenges"): PERSON_ONLY,
    ("POST", AGREEMENT + "/votes/withdraw"): PERSON_ONLY,
    ("POST", AGREEMENT + "/release"): LAB_ADMIN,
    ("POST", "/api/v1/orgs/{org}/checkins"): LAB_ADMIN,
    # hosted access: a worker registers with its own login (the service checks its grant);
    # heartbeat and deregistration carry the worker's secret instead (404 for no such worker)
    ("POST", "/api/v1/hosted/workers"): PERSON_ONLY,
    ("POST", "/api/v1/hosted/workers/{worker_id}/heartbeat"): PUBLIC,
    ("DELETE", "/api/v1/hosted/workers/{worker_id}"): PUBLIC,
    # studies of live use: any person registers, reads and consents; the service checks the
    # lab's admin (decide), the owner (close, members), the team (captures) on the study itself
    # (404 for none)
    ("POST", "/api/v1/studies"): PERSON_ONLY,
    ("GET", "/api/v1/studies"): PERSON_ONLY,
    ("GET", "/api/v1/studies/{study}"): PERSON_ONLY,
    ("POST", "/api/v1/studies/{study}/approve"): PERSON_ONLY,
    ("POST", "/api/v1/studies/{study}/reject"): PERSON_ONLY,
    ("POST", "/api/v1/studies/{study}/close"): PERSON_ONLY,
    ("POST", "/api/v1/studies/{study}/consent"): PERSON_ONLY,
    ("DELETE", "/api/v1/studies/{study}/consent"): PERSON_ONLY,
    ("GET", "/api/v1/studies/{study}/members"): PERSON_ONLY,
    ("POST", "/api/v1/studies/{study}/members"): PERSON_ONLY,
    ("DELETE", "/api/v1/studies/{study}/members/{user}"): PERSON_ONLY,
    ("GET", "/api/v1/studies/{study}/captures"): PERSON_ONLY,
    ("GET", "/api/v1/studies/{study}/captures/{capture_id}/url"): PERSON_ONLY,
}


def api_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        routes |= {(method, path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def test_the_table_names_every_api_route(app):
    assert api_routes(app) == set(TABLE)


@pytest.fixture
def identities(lab, make_person) -> dict[str, dict[str, str]]:
    headers = {
        "anonymous": {},
        "service_depositor": lab.auth,
        "depositor": make_person("dee@acme.example", (("acme-ai", "depositor"),)).auth,
        "reviewer": make_person("rita@acme.example", (("acme-ai", "reviewer"),)).auth,
        "org_admin": make_person("ada@acme.example", (("acme-ai", "admin"),)).auth,
        "other_admin": make_person("olaf@other.example", (("other-lab", "admin"),)).auth,
        "researcher": make_person("rosa@uni.example").auth,
        "auditor": make_person("audrey@audit.example", global_roles=("auditor",)).auth,
        "operator": make_person("otto@escrow.example", global_roles=("operator",)).auth,
    }
    return headers


def test_every_route_answers_every_identity_as_the_table_says(client, lab, identities):
    deposit = lab.open({"a": b"1"})
    values = {"deposit_id": deposit["deposit_id"], "index": "0", "org": "acme-ai",
              "nda_id": "acme-research-nda", "key_id": "0" * 32,
              "request_id": "rq_" + "0" * 16, "grant_id": "gr_" + "0" * 16, "seq": "0",
              "model": deposit["model"].split("/")[1], "version": deposit["version"],
              "worker_id": "mw_" + "0" * 16, "study": "st_" + "0" * 16,
              "capture_id": "cp_" + "0" * 16, "user": "0"}
    mismatches = []
    for (method, path), expected in sorted(TABLE.items()):
        url = path.format(**values)
        for identity, headers in identities.items():
            status = client.open(url, method=method, headers=headers, json=BODY).status_code
            got = status if status in (NO_LOGIN, FORBIDDEN) else OK
            if got != expected[identity]:
                mismatches.append(f"{method} {path} as {identity}: {status}, "
                                  f"expected {expected[identity]}")
    assert mismatches == []
