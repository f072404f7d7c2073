"""Loading the policy directory: schema errors with file and line, matching, reloading. Pure."""

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from broker.policy.loader import PolicyLibrary, check_policies, load_policies
from broker.policy.schema import PolicyError, parse_policy

from .conftest import GOOD, REPO_POLICIES


def test_the_shipped_policy_loads_with_its_id_path_and_sha256():
    policies = load_policies(REPO_POLICIES)
    assert [p.id for p in policies] == ["acme-ai"]
    acme = policies.get("acme-ai")
    path = REPO_POLICIES / "acme-ai.yaml"
    assert acme.path == path
    assert acme.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert acme.organisation == "acme-ai" and acme.models == ("acme-ai/*",)
    assert (acme.nda.id, acme.nda.min_version) == ("acme-research-nda", "1")
    assert acme.eligibility.verified_email and acme.eligibility.proven_key
    assert acme.require_post_quantum_key
    assert (acme.approvals.count, acme.approvals.role, acme.approvals.auto) == (1, "reviewer",
                                                                                False)
    assert not acme.approvals.allow_requester_org
    assert (acme.grant.default_days, acme.grant.max_days, acme.grant.releases_per_file) == (
        14, 30, 3)
    assert acme.embargo_until is None
    assert acme.access == ("weights", "inference", "internals")  # escrow demo --hosted
    assert (acme.grant.requests_per_minute, acme.grant.tokens_per_day) == (60, 100000)


def test_omitted_optional_sections_take_the_strict_defaults(write, policy_dir):
    write("acme-ai.yaml", "\n".join(line for line in GOOD.splitlines()
                                    if not line.startswith(("eligibility", "  "))))
    policy = load_policies(policy_dir).get("acme-ai")
    assert policy.eligibility.verified_email and policy.eligibility.proven_key
    assert policy.eligibility.email_domains == () and policy.eligibility.affiliations == ()
    assert policy.approvals.role == "reviewer" and not policy.grant.renewal


def test_the_examples_are_valid_policies_when_placed_in_a_policy_directory(policy_dir):
    for example in (REPO_POLICIES / "examples").glob("*.yaml"):
        shutil.copy(example, policy_dir)
    policies = load_policies(policy_dir)
    auto = policies.get("university-auto")
    assert auto.approvals.auto and auto.eligibility.affiliations == ("faculty@uni.example",
                                                                     "staff@uni.example")
    strict = policies.get("strict-two-reviewers")
    assert strict.approvals.count == 2 and strict.embargo_until.isoformat() == "2030-01-01"


def test_a_grant_section_may_set_an_inference_grants_quotas():
    text = _replace("releases_per_file: 3",
                    "releases_per_file: 3, requests_per_minute: 60, tokens_per_day: 100000")
    policy, problems = parse_policy(text.encode(), Path("acme-ai.yaml"))
    assert policy is not None, problems
    assert (policy.grant.requests_per_minute, policy.grant.tokens_per_day) == (60, 100000)
    plain, _ = parse_policy(GOOD.encode(), Path("acme-ai.yaml"))
    assert plain is not None and plain.grant.tokens_per_day is None  # no limit


def test_access_may_name_internals_and_no_unknown_kind():
    text = GOOD + "access: [weights, internals]\n"
    policy, problems = parse_policy(text.encode(), Path("acme-ai.yaml"))
    assert policy is not None, problems
    assert policy.access == ("weights", "internals")
    _, problems = parse_policy((GOOD + "access: [hidden_states]\n").encode(), Path("a.yaml"))
    assert problems and "internals" in str(problems)  # the kinds it may name are listed


def test_examples_and_ndas_subdirectories_are_not_loaded_as_policies(tmp_path):
    copy = tmp_path / "policies"
    shutil.copytree(REPO_POLICIES, copy)
    (copy / "ndas" / "stray.yaml").write_text("not: a policy\n")
    assert [p.id for p in load_policies(copy)] == ["acme-ai"]


def test_hidden_files_and_other_suffixes_are_ignored(write, policy_dir):
    write("acme-ai.yaml", GOOD)
    write(".acme-ai.yaml.swp", "garbage: [")
    write("README.md", "# notes")
    assert len(load_policies(policy_dir)) == 1


# --- errors, each with file and line -----------------------------------------------------------


def _replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


@pytest.mark.parametrize("text, line, expected", [
    ("organisation: [acme-ai\n", 2, "flow sequence started on line 1"),
    ("", 1, "is empty"),
    ("- just\n- a list\n", 1, "the policy must be a mapping"),
    (GOOD + "colour: blue\n", 10, "unknown key 'colour'"),
    (GOOD + "organisation: acme-ai\n", 10, "'organisation' twice"),
    (_replace("organisation: acme-ai\n", ""), 1, "lacks 'organisation'"),
    (_replace("organisation: acme-ai", "organisation: Acme AI"), 1, "organisation 'Acme AI'"),
    (_replace("models: [acme-ai/*]", "models: acme-ai/*"), 2, "models must be a list"),
    (_replace("models: [acme-ai/*]", "models: []"), 2, "models is empty"),
    (_replace("[acme-ai/*]", "[other-org/*]"), 2, "outside organisation 'acme-ai'"),
    (_replace("[acme-ai/*]", "['*']"), 2, "is not ORG/NAME"),
    (_replace("[acme-ai/*]", "[acme-ai/gpt-*-small]"), 2, "at most one '*', at the end"),
    (_replace("[acme-ai/*]", "[acme-ai/*, acme-ai/*]"), 2, "listed twice"),
    (_replace("min_version: 1}", "min_version: 1.10}"), 3, "quote it ('1.10')"),
    (_replace("{id: acme-research-nda, ", "{"), 3, "nda lacks 'id'"),
    (_replace("verified_email: true", "verified_email: please"), 5,
     "eligibility verified_email must be true or false"),
    (_replace("  proven_key: true", "  proven_key: true\n  affiliations: [faculty]"), 7,
     "affiliation 'faculty' is not valid"),
    (_replace("  proven_key: true", "  proven_key: true\n  email_domains: ['@uni']"), 7,
     "email domain '@uni' is not valid"),
    (_replace("count: 1,", "count: '1',"), 7, "approvals count must be a whole number"),
    (_replace("count: 1,", "count: 0,"), 7, "count is 0 without auto"),
    (_replace("{count: 1, role: reviewer}", "{role: reviewer}"), 7, "needs count"),
    (_replace("{count: 1, role: reviewer}", "{count: 2, auto: true}"), 7,
     "auto is true but count is 2"),
    (_replace("role: reviewer", "role: boss"), 7, "role 'boss' is unknown"),
    (_replace("max_days: 30", "max_days: 7"), 8, "default_days (14) is longer than max_days (7)"),
    (_replace("max_days: 30", "max_days: 99999"), 8, "max_days is 99999"),
    (_replace(", releases_per_file: 3", ""), 8, "grant lacks 'releases_per_file'"),
    (_replace("releases_per_file: 3", "releases_per_file: 0"), 8, "releases_per_file is 0"),
    (_replace("releases_per_file: 3", "releases_per_file: 3, requests_per_minute: 0"), 8,
     "requests_per_minute is 0"),
    (_replace("releases_per_file: 3", "releases_per_file: 3, tokens_per_day: many"), 8,
     "tokens_per_day must be a whole number"),
    (_replace("require_post_quantum_key: true", "require_post_quantum_key: 1"), 9,
     "require_post_quantum_key must be true or false"),
    (GOOD + "embargo_until: next spring\n", 10, "embargo_until must be a date"),
    (GOOD + "base: &b {x: 1}\n<<: *b\n", 10, "unknown key 'base'"),
    (GOOD + "<<: {organisation: x}\n", 10, "merge key"),
    (_replace("organisation: acme-ai", "organisation: !!python/name:os.system acme-ai"), 1,
     "organisation must be a string"),
    (_replace("min_version: 1}", "min_version: 3}"), 3, "no version 3 or later"),
    (_replace("id: acme-research-nda", "id: nope-nda"), 3, "NDA 'nope-nda' has no text"),
])
def test_a_bad_policy_is_refused_naming_file_and_line(write, policy_dir, text, line, expected):
    path = write("acme-ai.yaml", text)
    policies, problems = check_policies(policy_dir)
    assert policies is None
    assert any(p.path == path and p.line == line and expected in p.message for p in problems), (
        [str(p) for p in problems])


def test_every_error_of_every_file_is_reported_at_once(write, policy_dir):
    a = write("a.yaml", _replace("role: reviewer", "role: boss") + "colour: blue\n")
    b = write("b.yaml", _replace("[acme-ai/*]", "[acme-ai/gpt-*]").replace("max_days: 30",
                                                                            "max_days: 7"))
    c = write("c.yaml", "models: [\n")
    write("fine.yaml", _replace("[acme-ai/*]", "[acme-ai/ok]"))
    with pytest.raises(PolicyError) as refused:
        load_policies(policy_dir)
    found = {(p.path, p.line) for p in refused.value.problems}
    assert {(a, 7), (a, 10), (b, 8), (c, 2)} <= found
    assert f"{a}:7:" in refused.value.message and "(and 3 more)" in refused.value.message


def test_a_policy_naming_another_organisations_nda_is_refused(write, policy_dir):
    path = write("beta.yaml", GOOD.replace("acme-ai", "beta-lab").replace("beta-lab/*",
                                                                         "beta-lab/*"))
    _, problems = check_policies(policy_dir)
    assert [(p.path, p.line) for p in problems] == [(path, 3)]
    assert "belongs to 'acme-ai', not to 'beta-lab'" in problems[0].message


def test_a_broken_nda_text_is_reported_with_its_own_file_and_line(write, policy_dir):
    write("acme-ai.yaml", GOOD)
    bad = policy_dir / "ndas" / "broken.md"
    bad.write_text("---\nid: x\n")
    _, problems = check_policies(policy_dir)
    assert [p.path for p in problems] == [bad]


def test_the_same_pattern_in_two_files_is_an_error_naming_both(write, policy_dir):
    first = write("a.yaml", GOOD)
    second = write("b.yaml", "# another team's file\n" + GOOD)
    _, problems = check_policies(policy_dir)
    assert [(p.path, p.line) for p in problems] == [(second, 3)]
    assert f"{first}:2" in problems[0].message and "equally specific" in problems[0].message


def test_two_files_with_the_same_stem_are_an_error(write, policy_dir):
    write("acme-ai.yaml", GOOD)
    write("acme-ai.yml", _replace("[acme-ai/*]", "[acme-ai/x]"))
    _, problems = check_policies(policy_dir)
    assert len(problems) == 1 and "policy id 'acme-ai' is also the id of" in problems[0].message


def test_a_missing_or_empty_directory_is_an_error_not_an_open_door(tmp_path):
    _, missing = check_policies(tmp_path / "nowhere")
    assert "does not exist" in missing[0].message
    _, empty = check_policies(tmp_path)
    assert "has no policy file" in empty[0].message


def test_parse_policy_returns_every_problem_sorted_by_line():
    policy, problems = parse_policy(b"grant: 1\nmodels: 2\n", Path("x.yaml"))
    assert policy is None
    assert [p.line for p in problems] == sorted(p.line for p in problems)
    assert str(problems[0]).startswith("x.yaml:1: ")


# --- matching ------------------------------------------------------------------------------------


def test_the_most_specific_pattern_wins_across_files(write, policy_dir):
    write("all.yaml", GOOD)
    write("gpt.yaml", _replace("[acme-ai/*]", "[acme-ai/gpt-*]"))
    write("gpt-s.yaml", _replace("[acme-ai/*]", "[acme-ai/gpt-s*]"))
    write("exact.yaml", _replace("[acme-ai/*]", "[acme-ai/gpt-small]"))
    policies = load_policies(policy_dir)
    assert policies.match("acme-ai/gpt-small").id == "exact"
    assert policies.match("acme-ai/gpt-smaller").id == "gpt-s"
    assert policies.match("acme-ai/gpt-large").id == "gpt"
    assert policies.match("acme-ai/bert").id == "all"


def test_nothing_matches_by_default(write, policy_dir):
    write("acme-ai.yaml", _replace("[acme-ai/*]", "[acme-ai/gpt-*]"))
    policies = load_policies(policy_dir)
    assert policies.match("acme-ai/bert") is None
    assert policies.match("beta-lab/gpt-small") is None
    assert policies.match("acme-ai-evil/gpt-small") is None


# --- reloading -----------------------------------------------------------------------------------


def _touch_later(path: Path) -> None:
    """Make sure the change is visible to stat even on a coarse-mtime filesystem."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_a_changed_file_is_picked_up_without_a_restart(write, policy_dir):
    path = write("acme-ai.yaml", GOOD)
    library = PolicyLibrary(policy_dir)
    before = library.match("acme-ai/gpt-small")
    assert before.grant.max_days == 30
    assert library.current() is library.current()  # unchanged: not re-read
    path.write_text(GOOD.replace("max_days: 30", "max_days: 60"))
    _touch_later(path)
    after = library.match("acme-ai/gpt-small")
    assert after.grant.max_days == 60 and after.sha256 != before.sha256


def test_an_added_and_a_removed_file_are_picked_up(write, policy_dir):
    write("acme-ai.yaml", _replace("[acme-ai/*]", "[acme-ai/gpt-*]"))
    library = PolicyLibrary(policy_dir)
    assert library.match("acme-ai/bert") is None
    added = write("bert.yaml", _replace("[acme-ai/*]", "[acme-ai/bert]"))
    assert library.match("acme-ai/bert").id == "bert"
    added.unlink()
    assert library.match("acme-ai/bert") is None


def test_a_broken_file_fails_closed_then_recovers_when_fixed(write, policy_dir):
    path = write("acme-ai.yaml", GOOD)
    library = PolicyLibrary(policy_dir)
    assert library.match("acme-ai/gpt-small") is not None
    path.write_text(GOOD.replace("count: 1,", "count: lots,"))
    _touch_later(path)
    for _ in range(2):  # every call refuses, not only the first after the change
        with pytest.raises(PolicyError) as refused:
            library.match("acme-ai/gpt-small")
        assert f"{path}:7: approvals count must be a whole number" in refused.value.message
    path.write_text(GOOD)
    _touch_later(path)
    assert library.match("acme-ai/gpt-small").approvals.count == 1


def test_without_escrow_policy_dir_the_shipped_policies_are_read_from_any_folder(
    tmp_path, monkeypatch
):
    """The default policy folder is the package's own (importlib.resources), not ./policies:
    a broker started in another folder still has the demo's policy and NDA."""
    from broker.config import load_settings

    monkeypatch.chdir(tmp_path)
    shipped = load_settings({"ESCROW_DATA_DIR": str(tmp_path / "data")}).policy_dir
    assert shipped.is_absolute() and shipped.samefile(REPO_POLICIES)
    assert [p.id for p in load_policies(shipped)] == ["acme-ai"]
    assert (shipped / "ndas" / "acme-research-nda-v1.md").is_file()
    override = tmp_path / "mine"
    settings = load_settings(
        {"ESCROW_DATA_DIR": str(tmp_path / "data"), "ESCROW_POLICY_DIR": str(override)}
    )
    assert settings.policy_dir == override
