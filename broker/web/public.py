"""The public pages: what this escrow is, and the models it holds (no login needed)."""

from __future__ import annotations

from flask import g, render_template

from broker.http.common import escrow
from broker.services import agreements, catalog, quarantine
from broker.web.common import page_blueprint, page_doc

bp = page_blueprint("web_public", __name__)

OPENAPI = {
    "/": page_doc(public=True, get="the home page: what this escrow is and the models it holds"),
    "/agreements/{org}/{model}/{version}": page_doc(
        "org",
        "model",
        "version",
        public=True,
        get="a version's release agreement: in words, its state, what each trigger still "
        "misses, the lab's last check-in and the trustees' votes",
    ),
}


@bp.get("/")
def home() -> str:
    with escrow().uow() as uow:
        models = catalog.list_models(uow, escrow().settings.policy_dir)
        states = agreements.states(uow)
        reasons = quarantine.visible_reasons(uow, g.get("viewer"))
    return render_template(
        "public/index.html", models=models, agreements=states, quarantine_reasons=reasons
    )


@bp.get("/agreements/<org>/<model>/<version>")
def agreement(org: str, model: str, version: str) -> str:
    name = f"{org}/{model}"
    with escrow().uow() as uow:
        shown = agreements.show_if_any(uow, name, version)
        quarantined = quarantine.public_state(uow, g.get("viewer"), name, version)
    return render_template(
        "public/agreement.html", agreement=shown, name=f"{name}@{version}", quarantine=quarantined
    )
