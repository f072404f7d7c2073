"""What an audit event is about, read off its leaf: the columns that filters and visibility use.

Pure. The leaf stays the truth; these are copies kept beside it so "events of org X" or "events
about user 12" are indexed queries instead of scans of every leaf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EventIndex:
    org: str | None
    model: str | None
    user_id: str | None
    actor: str


def index_of(actor: dict[str, str], subject: dict[str, Any]) -> EventIndex:
    """Organisation, model (`org/model`), subject user and actor (`kind:id`) of one event."""
    model = subject.get("model")
    org = subject.get("org") or (model.split("/", 1)[0] if isinstance(model, str) else None)
    user = subject.get("user")
    return EventIndex(
        org=org if isinstance(org, str) else None,
        model=model if isinstance(model, str) else None,
        user_id=str(user) if user is not None else None,
        actor=f"{actor.get('kind')}:{actor.get('id')}",
    )
