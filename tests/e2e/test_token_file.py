"""Token files: `escrow admin token create --output` writes one 0600 (never readable by
others, not even for an instant), refuses to overwrite a file, and a `--token-file` readable by
others is used with a warning saying so and how to fix it."""

from __future__ import annotations

import os
import stat


def test_token_create_output_writes_a_0600_file_that_a_client_command_uses(broker_server,
                                                                          tmp_path):
    tok = tmp_path / "tok"
    created = broker_server.escrow("admin", "token", "create", "--org", "acme-ai", "--role",
                                   "depositor", "--output", str(tok))
    assert stat.S_IMODE(tok.stat().st_mode) == 0o600
    token = tok.read_text()
    assert token.startswith("esk_") and token.endswith("\n")
    assert "esk_" not in created.stdout + created.stderr  # the secret is only in the file
    assert f"written to {tok} (mode 0600)" in created.stdout
    used = broker_server.escrow("deposit", "--model", "acme-ai/m", "--version", "1",
                                "--recipient-only", "--token-file", str(tok), "--json")
    assert "warning" not in used.stderr
    assert broker_server.last_json(used)["recipient"].startswith("age1")


def test_token_create_output_refuses_an_existing_file_before_making_a_token(broker_server,
                                                                           tmp_path):
    tok = tmp_path / "tok"
    tok.write_text("an older token\n")
    before = broker_server.last_json(broker_server.escrow("admin", "token", "list", "--json"))
    refused = broker_server.escrow("admin", "token", "create", "--org", "acme-ai", "--role",
                                   "depositor", "--output", str(tok), check=False)
    assert refused.returncode == 1
    assert "already exists" in refused.stderr and "choose a new file name" in refused.stderr
    assert tok.read_text() == "an older token\n"
    after = broker_server.last_json(broker_server.escrow("admin", "token", "list", "--json"))
    assert after == before


def test_a_token_file_readable_by_others_is_used_with_a_warning(broker_server, tmp_path):
    tok = tmp_path / "tok"
    tok.write_text(broker_server.token + "\n")
    os.chmod(tok, 0o644)
    used = broker_server.escrow("deposit", "--model", "acme-ai/m", "--version", "1",
                                "--recipient-only", "--token-file", str(tok), "--json")
    assert f"--token-file {tok} is readable by anyone (mode 0644)" in used.stderr
    assert f"chmod 600 {tok}" in used.stderr
    assert broker_server.token not in used.stderr
    os.chmod(tok, 0o640)
    used = broker_server.escrow("deposit", "--model", "acme-ai/m", "--version", "1",
                                "--recipient-only", "--token-file", str(tok), "--json")
    assert "readable by its group (mode 0640)" in used.stderr
