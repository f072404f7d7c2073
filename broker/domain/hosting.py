"""Access kinds and the rules of hosted access that need no database. Pure.

`weights`: key releases to the grantee's own key (the escrow's first kind of access).
`inference`: querying the model hosted by the escrow (no key, no weights leave it).
`internals`: inference plus research views of the model's computation (token log-probabilities
and the top alternatives, asked with OpenAI's `logprobs` fields; hidden states and attention of
named layers, asked with the extension field `escrow_views`); no weights leave it either.
`hosting`: the grant of a model worker, the escrow's own process, that obtains the file keys of
a version to load it into memory; made by an operator (`escrow hosted allow`), never requested.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta

WEIGHTS = "weights"
INFERENCE = "inference"
INTERNALS = "internals"
HOSTING = "hosting"
# what a policy may allow and a person may ask for
REQUESTABLE_KINDS = (WEIGHTS, INFERENCE, INTERNALS)
KINDS = (*REQUESTABLE_KINDS, HOSTING)
RELEASING_KINDS = (WEIGHTS, HOSTING)  # grants under which file keys are released
QUERYING_KINDS = (INFERENCE, INTERNALS)  # grants under which the hosted model is queried

SECRET_HEADER = "X-Escrow-Worker-Secret"  # noqa: S105 (a header's name): the broker's calls
HEARTBEAT_S = 2.0  # a model worker heartbeats this often
LIVE_FOR = timedelta(seconds=6)  # a worker silent this long gets no more calls (3 heartbeats)


def is_live(heartbeat_at: datetime, moment: datetime) -> bool:
    """A worker is routed to while its last heartbeat is newer than LIVE_FOR."""
    return moment - heartbeat_at < LIVE_FOR


def release_refusal(kind: str) -> tuple[str, str] | None:
    """Why a grant of `kind` releases no file key (None: it does)."""
    if kind in RELEASING_KINDS:
        return None
    return (
        "hosted_access_only",
        f"this is an {kind} grant: hosted access gives no weights, so no file key is "
        "released under it; query the model through the broker's /v1 API instead",
    )


def internals_asked(body: Mapping[str, object], chat: bool) -> bool:
    """Whether an OpenAI request body asks for a research view: log-probabilities (chat's
    `logprobs: true` or `top_logprobs`, the legacy completions' `logprobs: N`, 0 included) or
    layer views (`escrow_views`, whatever its value but null: the worker checks its shape)."""
    if body.get("escrow_views") is not None:
        return True
    if chat:
        return body.get("logprobs") not in (None, False) or body.get("top_logprobs") is not None
    return body.get("logprobs") is not None


def internals_refusal(kind: str, full: str) -> tuple[str, str]:
    """Why a grant of `kind` (not internals) gets no research view of version `full`."""
    return (
        f"your grant of {full} is of kind {kind}, which allows no internals (logprobs, "
        "top_logprobs, escrow_views): it answers text only",
        f"leave logprobs and escrow_views out, or ask for internals access: escrow request "
        f"{full} --kind internals --purpose '…'",
    )


def model_name(org: str, model: str, version: str) -> str:
    """The hosted API's model name of a version: ORG/MODEL@VERSION."""
    return f"{org}/{model}@{version}"


# --- quotas (an inference grant's requests per minute and tokens per day) ---------------------

MINUTE, DAY = "minute", "day"  # the windows a grant's use is counted in (UTC)


def window_start(period: str, moment: datetime) -> datetime:
    """The start of the minute or UTC day that `moment` falls in."""
    if period == MINUTE:
        return moment.replace(second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def window_end(period: str, moment: datetime) -> datetime:
    step = timedelta(minutes=1) if period == MINUTE else timedelta(days=1)
    return window_start(period, moment) + step


def retry_after_s(period: str, moment: datetime) -> int:
    """Whole seconds until the window of `moment` ends (at least 1): the Retry-After."""
    return max(1, math.ceil((window_end(period, moment) - moment).total_seconds()))
