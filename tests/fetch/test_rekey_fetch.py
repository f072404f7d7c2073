"""After a rekey, `escrow fetch` under the old grant is refused with a clear error, and under a
new grant fetches the re-keyed files, byte-identical to what was deposited."""

from __future__ import annotations

import json

import test_fetch
from fetch_support import grant, seal
from test_fetch import FILES, run_cli

from broker.domain.principals import OPERATOR
from broker.services import rekey, worker

env = test_fetch.env  # a fixture: the client's own config directory


def test_a_new_grant_fetches_the_rekeyed_files_and_the_old_one_is_refused(
    escrow, lab, researcher, broker_url, env, tmp_path
):
    deposit = seal(escrow, lab, FILES)
    old = grant(escrow, researcher, deposit["deposit_id"])
    assert run_cli(broker_url, researcher, tmp_path / "before").exit_code == 0
    with escrow.uow() as uow:
        rekey.request_rekey(escrow, uow, OPERATOR, "acme-ai/gpt-small", "2024-05", "leak 3")
    assert worker.run_pending(escrow) == 1

    refused = run_cli(broker_url, researcher, tmp_path / "old", "--grant", old)
    assert refused.exit_code != 0
    assert "revoked" in refused.output, refused.output

    grant(escrow, researcher, deposit["deposit_id"])
    out = tmp_path / "after"
    fetched = run_cli(broker_url, researcher, out)
    assert fetched.exit_code == 0, fetched.output
    summary = json.loads(fetched.stdout.strip().splitlines()[-1])
    assert {f["state"] for f in summary["files"]} == {"fetched"}
    for path, data in FILES.items():
        assert (out / path).read_bytes() == data
