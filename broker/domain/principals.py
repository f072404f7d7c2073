"""Who is acting: a service token, an operator at the server console, or the system itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    kind: str  # "token" | "operator" | "system"
    id: str
    org: str | None = None
    role: str | None = None

    def audit_ref(self) -> dict[str, str]:
        """How the actor appears on the audit log: stable ids only, no personal data."""
        ref = {"kind": self.kind, "id": self.id}
        if self.org:
            ref["org"] = self.org
        if self.role:
            ref["role"] = self.role
        return ref


OPERATOR = Principal(kind="operator", id="console")
SYSTEM = Principal(kind="system", id="worker")
