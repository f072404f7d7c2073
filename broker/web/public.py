"""The public pages: what this escrow is, and the models it holds (no login needed)."""

from __future__ import annotations

from flask import render_template

from broker.http.common import escrow
from broker.services import catalog
from broker.web.common import page_blueprint, page_doc

bp = page_blueprint("web_public", __name__)

OPENAPI = {
    "/": page_doc(public=True, get="the home page: what this escrow is and the models it holds"),
}


@bp.get("/")
def home() -> str:
    with escrow().uow() as uow:
        models = catalog.list_models(uow, escrow().settings.policy_dir)
    return render_template("public/index.html", models=models)
