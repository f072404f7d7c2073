"""HTML pages for people in a browser: blueprints and templates that only translate."""

from __future__ import annotations

from types import ModuleType


def page_modules() -> tuple[ModuleType, ...]:
    """The modules of the role pages, each with a `bp` blueprint and its `OPENAPI` paths: the
    app registers them and the OpenAPI document describes them from this one list."""
    from broker.web import audit, lab, operator, public, researcher, studies

    return (public, researcher, studies, lab, operator, audit)
