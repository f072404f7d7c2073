"""The end of a deposit: wait for the broker's verification to seal it, and say why not when it
failed or is still going (the errors `escrow deposit` exits with)."""

from __future__ import annotations

import time
from typing import Any

from broker.client.http import BrokerClient
from broker.client.progress import Progress
from broker.errors import EscrowError

__all__ = [
    "FAILED",
    "SEALED",
    "VERIFYING",
    "DepositFailed",
    "StillVerifying",
    "deposit_failure",
    "wait_for_seal",
]

SEALED, FAILED, VERIFYING = "sealed", "failed", "verifying"


class DepositFailed(EscrowError):
    status = 409
    title = "deposit failed verification"
    exit_code = 3  # `escrow deposit` exits 3 (broker.cli.client.EXIT_FAILED)


class StillVerifying(EscrowError):
    """--wait-timeout ran out while the broker was still verifying."""

    status = 504
    title = "still verifying"
    exit_code = 5  # `escrow deposit` exits 5: not failed, not sealed yet


def wait_for_seal(
    client: BrokerClient, progress: Progress, deposit_id: str, timeout_s: float
) -> dict[str, Any]:
    """Poll until the deposit is sealed or failed, or --wait-timeout runs out (then
    StillVerifying says what is known and how to keep waiting)."""
    progress.info("waiting for the broker to verify and seal the deposit "
                  "(Ctrl-C is safe: it keeps going)")
    deadline = time.monotonic() + max(0.0, timeout_s)
    delay = 0.05
    said = ""
    while True:
        deposit: dict[str, Any] = client.get(f"/api/v1/deposits/{deposit_id}")
        if deposit["state"] in (SEALED, FAILED):
            return deposit
        news = _verification_news(deposit.get("verification"))
        if news and news != said:
            progress.info(news)
            said = news
        if time.monotonic() >= deadline:
            raise _still_verifying(deposit, timeout_s)
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 1.0)


def _verification_news(verification: Any) -> str:
    """A line about the verification job worth showing while waiting ('' if nothing)."""
    if not isinstance(verification, dict):
        return ""
    attempts = verification.get("attempts") or 0
    error = verification.get("error")
    if not (attempts > 1 or error):
        return ""
    line = f"verification attempt {attempts} ({verification.get('state') or 'queued'})"
    if error:
        line += f"; the last one failed: {error}"
    if verification.get("next_attempt_at"):
        line += f"; next attempt at {verification['next_attempt_at']}"
    return line


def _still_verifying(deposit: dict[str, Any], waited_s: float) -> StillVerifying:
    verification = deposit.get("verification")
    known = [f"deposit {deposit['deposit_id']} is still {deposit['state']} after "
             f"{_duration(waited_s)} (--wait-timeout)"]
    if isinstance(verification, dict):
        known.append(f"verification {verification.get('state') or 'unknown'}, attempt "
                     f"{verification.get('attempts') or 0}")
        if verification.get("worker"):
            known.append(f"worker {verification['worker']}, last heartbeat "
                         f"{verification.get('heartbeat_at') or 'never'}")
        if verification.get("error"):
            known.append(f"last error: {verification['error']}")
        if verification.get("next_attempt_at"):
            known.append(f"next attempt at {verification['next_attempt_at']}")
    return StillVerifying(
        "; ".join(known),
        hint="nothing is lost and the broker keeps verifying: run the same command again to "
        "keep waiting (with a longer --wait-timeout if need be), or --no-wait to return at "
        "once; if no worker has a recent heartbeat, ask the operator to check `escrow worker`",
    )


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def deposit_failure(deposit: dict[str, Any]) -> DepositFailed:
    bad = [f"{f['path']}: {f.get('error') or f['state']}" for f in deposit["files"]
           if f["state"] == FAILED or f.get("error")]
    if not bad:  # every file matched: sealing itself failed (e.g. the store's Object Lock)
        return DepositFailed(
            f"deposit {deposit['deposit_id']} could not be sealed: "
            f"{deposit.get('failure') or 'see the deposit'}",
            hint="the uploaded files matched and need not be sent again; the operator must fix "
            f"what the message names, then `escrow verify {deposit['deposit_id']}` seals it",
        )
    return DepositFailed(
        f"deposit {deposit['deposit_id']} failed verification: "
        f"{deposit.get('failure') or 'see the files'}"
        + ("".join(f"\n  - {b}" for b in bad[:20])),
        # The broker's own hint when it gives one (a worker that kept dying, a store refusing
        # Object Lock are not "it did not match").
        hint=deposit.get("failure_hint")
        or "run the same command again to upload the failed files anew; if the files are "
        "not at fault, the operator can retry the verification with `escrow verify "
        f"{deposit['deposit_id']}`",
    )
