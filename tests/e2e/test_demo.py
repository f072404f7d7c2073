"""`escrow demo`: the whole story against a real broker process, and its JSON summary."""

from __future__ import annotations

import stat
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_tells_the_whole_story_twice_and_every_check_holds(broker_server):
    # The broker of the fixture runs from the repository (policies/ relative to it); the demo
    # is told the same policy directory, absolutely, wherever pytest runs from.
    broker_server.env["ESCROW_POLICY_DIR"] = str(REPO / "policies")
    result = broker_server.escrow("demo", "--broker", broker_server.url, "--json", check=False)
    assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"

    summary = broker_server.last_json(result)
    assert summary["ok"] is True
    assert summary["started_broker"] is False  # it used the broker that answered
    assert summary["model"] == "acme-ai/demo-gpt"
    assert summary["sealed"] and summary["fetched"] and summary["byte_identical"]
    assert summary["revoked"] and summary["refused"]
    assert "revoked" in summary["refusal"]
    assert summary["audit_log_size"] > 20  # every step above is on the log, and it verifies
    assert summary["grant_id"].startswith("gr_") and summary["request_id"].startswith("rq_")
    # The escrow half: a version bound by an agreement, released by two trustees' votes,
    # fetched under the policy it unlocked, then re-keyed as leaked and its grant refused.
    assert summary["released"] and summary["released_fetched"] and summary["rekeyed"]
    assert "revoked" in summary["rekey_refusal"]
    assert len(summary["agreement_sha256"]) == 64

    story = result.stdout
    for words in ("sealed under a signed manifest", "is proven", "acme-research-nda",
                  "is approved", "files identical", "escrow fetch refused",
                  "released: trustees", "granted at once under policy public", "re-keyed"):
        assert words in story
    identity = broker_server.data_dir / "demo" / "researcher-identity.txt"
    assert stat.S_IMODE(identity.stat().st_mode) == 0o600
    assert "AGE-SECRET-KEY-PQ-" in identity.read_text()

    # Again on the same data: people, org and NDA signature are reused, the version is new.
    again = broker_server.last_json(
        broker_server.escrow("demo", "--broker", broker_server.url, "--json"))
    assert again["ok"] is True and again["version"] != summary["version"]
