"""Where access is decided: every API and CLI action asks `authorize` and nothing else."""

from __future__ import annotations

from broker.domain.principals import Principal
from broker.errors import Forbidden

# action -> roles of the owning organisation that may perform it
ORG_ACTIONS: dict[str, tuple[str, ...]] = {
    "deposit.create": ("depositor",),
    "deposit.upload": ("depositor",),
    "deposit.read": ("depositor", "reviewer", "admin"),
}


def authorize(principal: Principal, action: str, org: str) -> None:
    """Allow or raise Forbidden. Operators at the console may do everything."""
    if principal.kind in ("operator", "system"):
        return
    allowed = ORG_ACTIONS.get(action)
    if allowed is None:
        raise Forbidden(f"{action}: no such action", hint="this is a bug; please report it")
    if principal.holds(org, allowed):
        return
    raise Forbidden(
        f"{action} on organisation {org!r} needs the role {' or '.join(allowed)} in {org!r}",
        hint=f"ask an operator for a token: escrow admin token create --org {org} --role "
        f"{allowed[0]}",
    )
