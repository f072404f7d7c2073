"""Access requests and their reviews: from "a researcher wants the weights" to a grant.

A request names a sealed model version. The policy that matches the model decides, as a pure
function of `Facts` gathered here (the requester's trusted claims, signed NDA texts, proven keys,
the reviews so far): `broker.policy.evaluate`. Every request is stored with the policy's id and
SHA-256 and the decision's reasons, whatever the outcome:

- not eligible (an NDA unsigned, no proven key, a domain not allowed …): stored as `denied`
  with what is missing, and refused (422) saying so; the researcher fixes it and asks again with
  a new request, the old one stays on the record for them and the reviewers;
- eligible, approvals outstanding: `pending`, for the organisation's reviewers;
- allowed (e.g. a policy that approves automatically): `approved`, and the grant is made at once.

A review adds an approval or a denial and evaluates again; when the policy is satisfied the
grant is made (`broker.services.grants.create_grant`). Every request, review and grant is an
audit event carrying the policy's SHA-256 and the reasons, never personal data.

The requester may withdraw a pending request (`withdraw`): it leaves the reviewers' queue and
stays on the record as `withdrawn`. When the policy allows it (`grant.renewal`), the researcher
of an active grant may ask to renew it (`request_renewal`): a request like any other, evaluated
and reviewed the same way, that names the grant it renews; its grant keeps the same key and
starts when the old one ends.

The service is a package, one module per concern; this module is its public face (what the API,
the web pages, the catalog and the benchmarks call), so callers need not know the layout:

- `requests`: asking (and explaining), withdrawing, renewing;
- `reviews`: approving or denying, the reviewers' queue;
- `facts`: the facts a policy decides on, and the policy that matches a model;
- `granting`: the grant of an allowed request;
- `views`: requests as described to people and the API;
- `common`: request states, the refusal, and what the others share.
"""

from broker.services.access.common import RequestRefused
from broker.services.access.facts import match_policy
from broker.services.access.requests import create_request, explain, request_renewal, withdraw
from broker.services.access.reviews import decide, pending_reviews
from broker.services.access.views import (
    describe_decision,
    describe_request,
    my_requests,
    outcome,
    researcher_facts,
    visible_request,
)

__all__ = [
    "RequestRefused",
    "create_request",
    "decide",
    "describe_decision",
    "describe_request",
    "explain",
    "match_policy",
    "my_requests",
    "outcome",
    "pending_reviews",
    "request_renewal",
    "researcher_facts",
    "visible_request",
    "withdraw",
]
