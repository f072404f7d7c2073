"""The operator's page: health of the database, the object store and key custody, and the
deposits waiting for (or failed at) verification."""

from __future__ import annotations

from flask import render_template

from broker.domain.access import Action
from broker.http.common import escrow
from broker.services import health
from broker.web.common import page_blueprint, page_doc, person, require

bp = page_blueprint("web_operator", __name__)

OPENAPI = {
    "/operator": page_doc(
        get="health (database, store, key custody) and pending verifications (operators)"
    ),
}


@bp.get("/operator")
def dashboard() -> tuple[str, int]:
    actor = person()
    require(actor, Action.HEALTH_READ)
    checks = health.check_all(escrow(), actor)
    with escrow().uow() as uow:
        waiting = health.verifications(uow, actor, escrow().settings.job_lease_s)
    ok = all(check.ok for check in checks)
    # 503 when a part fails, like /healthz: a monitor may watch this page too.
    return render_template("operator/health.html", checks=checks, ok=ok, **waiting), (
        200 if ok else 503
    )
