"""gunicorn's access log, without secrets: signed store URLs and login links carry bearer
secrets in their path, the OIDC callback an authorization code in its query."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

from gunicorn.glogging import Logger

_SECRET_PATHS = re.compile(r"^(/store/v1/|/auth/link/)[^/?\s]+")
_SECRET_QUERIES = ("/auth/callback",)
_SECRET_HEADERS = ("{authorization}i", "{cookie}i")


def redact_path(path: str) -> str:
    return _SECRET_PATHS.sub(r"\1[redacted]", path)


def redact_uri(uri: str) -> str:
    path, sep, query = uri.partition("?")
    if path.startswith(_SECRET_QUERIES) and query:
        query = "[redacted]"
    return redact_path(path) + (sep + query if sep else "")


class RedactingLogger(Logger):
    def atoms(
        self, resp: Any, req: Any, environ: MutableMapping[str, Any], request_time: Any
    ) -> Any:  # gunicorn's own TypedDict, with our header keys added: a plain dict of it
        atoms: dict[str, Any] = dict(super().atoms(resp, req, environ, request_time))
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        shown = redact_uri(path + (f"?{query}" if query else ""))
        atoms["r"] = f"{environ['REQUEST_METHOD']} {shown} {environ['SERVER_PROTOCOL']}"
        atoms["U"], _, atoms["q"] = shown.partition("?")
        for header in _SECRET_HEADERS:
            if header in atoms:
                atoms[header] = "[redacted]"
        return atoms

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        # gunicorn names the failing request's URI here ("Error handling request %s").
        super().exception(msg, *(redact_uri(a) if isinstance(a, str) else a for a in args),
                          **kwargs)
