"""Release agreements, pure: the strict schema (file:line errors) and evaluation from facts,
with a clock that moves (facts carry `now`; nothing sleeps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.policy.agreement import (
    AgreementError,
    AllOf,
    LabAdmin,
    TrusteeVote,
    load_agreement,
    parse_agreement,
)
from broker.policy.agreement_rules import (
    AgreementFacts,
    agreement_words,
    evaluate_agreement,
    evaluate_amendment,
)

REPO = Path(__file__).resolve().parents[2]
PATH = Path("agreement.yaml")
TRUSTEES = ["ada@trust.example", "bo@uni.example", "cy@law.example"]

GOOD = """\
model: acme-ai/gpt-small
trustees: [ada@trust.example, Bo@uni.example, cy@law.example]
triggers:
  - name: sunset
    when: {date: 2030-01-01}
    unlocks: public
  - name: lab-gone
    when:
      all_of:
        - lab_silence: {days: 180}
        - trustee_vote: {count: 2}
    unlocks: acme-research
  - name: early
    when: {lab_release: true}
    unlocks: public
"""

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


def load(text: str = GOOD):
    return load_agreement(text.encode(), PATH)


def problems(text: str) -> list[str]:
    agreement, found = parse_agreement(text.encode(), PATH)
    assert agreement is None
    return [str(p) for p in found]


def facts(now: datetime, **kw) -> AgreementFacts:
    kw.setdefault("silent_since", T0)
    return AgreementFacts(now=now, **kw)


def test_a_good_agreement_reads_with_its_default_amendment_rule():
    agreement = load()
    assert agreement.model == "acme-ai/gpt-small"
    assert agreement.trustees == tuple(TRUSTEES)  # lowercased
    assert [t.name for t in agreement.triggers] == ["sunset", "lab-gone", "early"]
    assert agreement.amendment == AllOf((LabAdmin(), TrusteeVote(2)))  # a majority of 3
    assert agreement.policies() == ("acme-research",)
    words = agreement_words(agreement)
    assert words[1] == (
        "lab-gone: when (the lab silent for 180 days AND 2 trustee votes), requests are "
        "decided under policy acme-research"
    )
    assert "amended only with (the lab's admin proposes AND 2 trustee votes)" in words


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "agreement.yaml:1: is empty: an agreement names at least model, triggers"),
        ("model: acme-ai/x\ntriggers: []\n", "agreement.yaml:2: triggers is empty"),
        (
            "model: acme-ai/x\nbogus: 1\ntriggers: [{name: a, when: {lab_release: true}, "
            "unlocks: public}]\namendment: {lab_admin: true}\n",
            "agreement.yaml:2: the agreement has an unknown key 'bogus'",
        ),
        (
            "model: acme-ai/x\ntrustees: [a@b.example]\ntriggers:\n  - name: a\n"
            "    when: {trustee_vote: {count: 2}}\n    unlocks: public\n",
            "agreement.yaml:5: trigger a trustee_vote asks for 2 votes but the agreement "
            "names 1 trustee",
        ),
        (
            "model: acme-ai/x\ntriggers:\n  - name: a\n    when: {lab_release: true}\n"
            "    unlocks: public\n",
            "agreement.yaml:1: the agreement names no trustees",
        ),
        (
            "model: acme-ai/x\ntrustees: [a@b.example]\ntriggers:\n  - name: a\n"
            "    when: {date: soon}\n    unlocks: public\n",
            "agreement.yaml:5: trigger a date must be a date such as 2025-06-01",
        ),
        (
            "model: acme-ai/x\ntrustees: [a@b.example]\ntriggers:\n  - name: a\n"
            "    when: {lab_silence: 3, date: 2030-01-01}\n    unlocks: public\n",
            "agreement.yaml:5: trigger a: a condition is a mapping with one key",
        ),
        (
            "model: acme-ai/x\ntrustees: [a@b.example]\ntriggers:\n  - name: a\n"
            "    when: {lab_admin: true}\n    unlocks: public\n",
            "agreement.yaml:5: trigger a condition has an unknown key 'lab_admin'",
        ),
        (
            "model: acme-ai/x\ntrustees: [a@b.example, a@b.example]\ntriggers:\n  - name: a\n"
            "    when: {lab_release: true}\n    unlocks: Public Domain\n",
            "agreement.yaml:2: trustee 'a@b.example' is listed twice",
        ),
    ],
)
def test_errors_name_the_file_and_line(text, expected):
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_listed_and_the_error_is_a_422():
    text = (
        "model: ACME\ntrustees: [nobody]\ntriggers:\n  - name: a\n"
        "    when: {any_of: [{lab_release: true}]}\n    unlocks: public\n"
    )
    with pytest.raises(AgreementError) as raised:
        load(text)
    assert raised.value.status == 422
    lines = [p.line for p in raised.value.problems]
    assert lines == [1, 2, 5]


def test_the_shipped_examples_are_valid():
    examples = sorted((REPO / "policies" / "examples").glob("agreements/*.yaml"))
    assert len(examples) >= 2
    for path in examples:
        load_agreement(path.read_bytes(), path)


def test_date_trigger_as_the_clock_moves():
    agreement = load()
    before = evaluate_agreement(agreement, facts(datetime(2029, 12, 31, 23, 59, tzinfo=UTC)))
    assert not before.released
    assert before.triggers[0].missing == ("the date 2030-01-01 (in 1 day)",)
    at = evaluate_agreement(agreement, facts(datetime(2030, 1, 1, tzinfo=UTC)))
    assert at.released and at.trigger == "sunset" and at.unlocks == "public"


def test_lab_silence_and_trustee_votes_combine():
    agreement = load()
    now = T0 + timedelta(days=179)
    decision = evaluate_agreement(agreement, facts(now, votes=frozenset(TRUSTEES[:2])))
    gone = decision.triggers[1]
    assert not gone.met
    assert len(gone.missing) == 1 and gone.missing[0].startswith(
        "the lab silent for 180 days (silent 179 days so far"
    )
    now += timedelta(days=1)  # the clock moves: the switch is due
    decision = evaluate_agreement(agreement, facts(now, votes=frozenset(TRUSTEES[:1])))
    assert not decision.released
    assert decision.triggers[1].missing == (
        "1 more trustee vote (of bo@uni.example, cy@law.example)",
    )
    decision = evaluate_agreement(agreement, facts(now, votes=frozenset(TRUSTEES[:2])))
    assert decision.released and decision.trigger == "lab-gone"
    assert decision.unlocks == "acme-research"
    # a check-in resets the switch
    decision = evaluate_agreement(
        agreement, facts(now, silent_since=now - timedelta(days=1), votes=frozenset(TRUSTEES))
    )
    assert not decision.released


def test_votes_of_people_who_are_not_trustees_do_not_count():
    agreement = load()
    now = T0 + timedelta(days=400)
    decision = evaluate_agreement(
        agreement, facts(now, votes=frozenset({"ada@trust.example", "mallory@evil.example"}))
    )
    assert not decision.released


def test_lab_release_and_any_of():
    agreement = load()
    assert evaluate_agreement(agreement, facts(T0, lab_released=True)).trigger == "early"
    either = load(
        GOOD.replace(
            "when: {lab_release: true}",
            "when: {any_of: [{lab_release: true}, {trustee_vote: {count: 3}}]}",
        )
    )
    decision = evaluate_agreement(either, facts(T0))
    assert decision.triggers[2].missing == (
        "one of: the lab's admin releasing it early | 3 more trustee votes "
        "(of ada@trust.example, bo@uni.example, cy@law.example)",
    )
    assert evaluate_agreement(either, facts(T0, votes=frozenset(TRUSTEES))).trigger == "early"


def test_amendment_rule_needs_the_lab_admin_and_a_quorum():
    agreement = load()
    alone = evaluate_amendment(agreement, facts(T0, lab_admin=True))
    assert not alone.allowed and alone.missing == (
        "2 more trustee votes (of ada@trust.example, bo@uni.example, cy@law.example)",
    )
    trustees_only = evaluate_amendment(agreement, facts(T0, votes=frozenset(TRUSTEES)))
    assert not trustees_only.allowed and trustees_only.missing == ("the lab's admin proposing it",)
    both = evaluate_amendment(agreement, facts(T0, lab_admin=True, votes=frozenset(TRUSTEES[1:])))
    assert both.allowed


def test_an_explicit_amendment_rule():
    agreement = load(GOOD + "amendment: {trustee_vote: {count: 3}}\n")
    assert not evaluate_amendment(agreement, facts(T0, lab_admin=True)).allowed
    assert evaluate_amendment(agreement, facts(T0, votes=frozenset(TRUSTEES))).allowed


def test_an_empty_trustee_list_needs_an_amendment_rule():
    text = (
        "model: acme-ai/x\ntrustees: []\n"
        "triggers: [{name: a, when: {date: 2030-01-01}, unlocks: public}]\n"
    )
    assert problems(text)[0].startswith("agreement.yaml:1: the agreement names no trustees")
    assert load(text + "amendment: {lab_admin: true}\n").amendment == LabAdmin()


def test_the_readme_example_is_valid():
    import re

    readme = (REPO / "README.md").read_text()
    block = re.search(r"```yaml\n(model: acme-ai/gpt-small.*?)```", readme, re.S).group(1)
    agreement = load(block)
    assert [t.name for t in agreement.triggers] == ["lab-gone", "early", "sunset"]
