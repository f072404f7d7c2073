"""`escrow policy check`: every error as file:line, exit 1; a summary and exit 0 when valid."""

import json

from click.testing import CliRunner

from broker.cli import main

from .conftest import GOOD, REPO_POLICIES


def run(*args, env=None):
    return CliRunner().invoke(main, ["policy", "check", *args], env=env)


def test_the_shipped_policies_pass():
    result = run(str(REPO_POLICIES))
    assert result.exit_code == 0, result.output
    assert "1 policy OK" in result.output and "acme-ai: acme-ai/*" in result.output


def test_the_directory_defaults_to_escrow_policy_dir():
    result = run(env={"ESCROW_POLICY_DIR": str(REPO_POLICIES)})
    assert result.exit_code == 0, result.output


def test_json_lists_each_policy_with_its_sha256():
    result = run(str(REPO_POLICIES), "--json")
    assert result.exit_code == 0
    report = json.loads(result.output.splitlines()[-1])
    assert report["ok"] is True
    [acme] = report["policies"]
    assert (acme["id"], acme["models"], len(acme["sha256"])) == ("acme-ai", ["acme-ai/*"], 64)


def test_a_broken_directory_fails_with_every_error_as_file_and_line(write, policy_dir):
    a = write("a.yaml", GOOD.replace("role: reviewer", "role: boss"))
    b = write("b.yaml", GOOD.replace("[acme-ai/*]", "[other/*]"))
    result = run(str(policy_dir))
    assert result.exit_code == 1
    assert f"{a}:7: approvals role 'boss' is unknown" in result.output
    assert f"{b}:2: model pattern 'other/*' is outside organisation 'acme-ai'" in result.output
    assert "2 errors in" in result.output


def test_json_errors_carry_file_line_and_message(write, policy_dir):
    path = write("a.yaml", GOOD + "colour: blue\n")
    result = run(str(policy_dir), "--json")
    assert result.exit_code == 1
    report = json.loads(result.output.splitlines()[-1])
    assert report["ok"] is False
    assert report["errors"] == [{"file": str(path), "line": 10, "message":
                                 "the policy has an unknown key 'colour'; expected one of "
                                 "organisation, models, nda, eligibility, approvals, grant, "
                                 "require_post_quantum_key, embargo_until, description, requires, "
                                 "access"}]
