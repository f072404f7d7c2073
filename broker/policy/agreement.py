"""Release agreements: what a lab commits to in advance for one model version. Pure.

An agreement names the conditions (triggers) under which a sealed version opens, each to an
existing access policy or to `public` (anyone logged in, no review), the trustees whose votes
count, and the rule by which the agreement itself may be amended. It is read with the policy
reader (`NodeReader`: every problem with its file and line) and evaluated from facts handed in
(`evaluate_agreement`, `evaluate_amendment`): no clock, no database, no Flask here.

The format (see `policies/examples/agreements/` for commented files):

    model: acme-ai/gpt-small             # ORG/NAME; the version is named when attaching it
    trustees: [ada@trust.example, bo@uni.example, cy@law.example]   # verified e-mail addresses
    triggers:                            # at least one; the first met (in this order) releases
      - name: sunset
        when: {date: 2030-01-01}         # on or after that UTC date
        unlocks: public                  # or the id of an access policy of the organisation
      - name: lab-gone
        when:
          all_of:                        # all_of / any_of combine conditions, nested as needed
            - lab_silence: {days: 180}   # no check-in by the lab for 180 days
            - trustee_vote: {count: 2}   # 2 of the trustees above voted to release
        unlocks: acme-research
      - name: early
        when: {lab_release: true}        # the lab's admin releases early
        unlocks: public
    amendment:                           # optional; default: lab_admin AND a trustee majority
      all_of: [{lab_admin: true}, {trustee_vote: {count: 2}}]
    description: "…"                     # optional, shown to people
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from yaml.nodes import MappingNode, Node

from broker.errors import InvalidInput
from broker.policy.nodes import NodeReader, PolicyProblem
from broker.policy.schema import (
    MAX_POLICY_BYTES,
)

PUBLIC = "public"
MAX_TRUSTEES = 50
MAX_SILENCE_DAYS = 36500  # a century: longer is no switch at all
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
_POLICY_ID = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9])?$")
_MODEL = re.compile(
    r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?/[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9])?$"
)
_EMAIL = re.compile(r"^[^@\s]{1,64}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")

# --- what an agreement is ----------------------------------------------------------------------


@dataclass(frozen=True)
class OnOrAfter:
    day: date  # from 00:00 UTC that day


@dataclass(frozen=True)
class LabSilence:
    days: int  # the lab has not checked in for at least this many days


@dataclass(frozen=True)
class TrusteeVote:
    count: int  # k of the agreement's n trustees


@dataclass(frozen=True)
class LabRelease:
    """The lab's admin released the version early."""


@dataclass(frozen=True)
class LabAdmin:
    """The lab's admin proposes (amendment rules only)."""


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Condition, ...]


Condition = OnOrAfter | LabSilence | TrusteeVote | LabRelease | LabAdmin | AllOf | AnyOf
TRIGGER_KINDS = ("date", "lab_silence", "trustee_vote", "lab_release")


@dataclass(frozen=True)
class Trigger:
    name: str
    when: Condition
    unlocks: str  # an access policy id, or PUBLIC


@dataclass(frozen=True)
class Agreement:
    model: str  # ORG/NAME
    trustees: tuple[str, ...]  # lowercase e-mail addresses
    triggers: tuple[Trigger, ...]
    amendment: Condition
    sha256: str  # of the exact bytes
    description: str = ""

    @property
    def organisation(self) -> str:
        return self.model.partition("/")[0]

    def policies(self) -> tuple[str, ...]:
        """The access policy ids the triggers unlock (not `public`)."""
        return tuple(dict.fromkeys(t.unlocks for t in self.triggers if t.unlocks != PUBLIC))


# --- reading ----------------------------------------------------------------------------------

_TOP = ("model", "trustees", "triggers", "amendment", "description")
_TOP_REQUIRED = ("model", "triggers")


def parse_agreement(raw: bytes, path: Path) -> tuple[Agreement | None, list[PolicyProblem]]:
    """An agreement from a file's bytes (`path` names it in errors), or every problem found."""
    reader = _AgreementReader(path)
    agreement = reader.agreement(raw)
    if reader.problems:
        return None, sorted(reader.problems, key=lambda p: p.line)
    return agreement, []


class AgreementError(InvalidInput):
    """An agreement file has errors (422: the person sending it fixes it)."""

    title = "invalid release agreement"

    def __init__(self, problems: list[PolicyProblem]) -> None:
        self.problems = tuple(problems)
        first = self.problems[0] if self.problems else "no problems?"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(
            f"the release agreement is invalid: {first}{more}",
            hint="fix every error listed (README, 'Release agreements', shows the format)",
        )


def load_agreement(raw: bytes, path: Path) -> Agreement:
    """`parse_agreement`, raising `AgreementError` (every problem) when there is any."""
    agreement, problems = parse_agreement(raw, path)
    if agreement is None:
        raise AgreementError(problems)
    return agreement


class _AgreementReader(NodeReader):
    def agreement(self, raw: bytes) -> Agreement | None:
        root = self.document(
            raw, MAX_POLICY_BYTES, "an agreement names at least " + ", ".join(_TOP_REQUIRED)
        )
        if root is None:
            return None
        fields = self.mapping(root, "the agreement", _TOP, _TOP_REQUIRED)
        if fields is None:
            return None
        model = self.at(
            fields,
            "model",
            lambda n: self.string(n, "model", _MODEL, "ORG/NAME, e.g. acme-ai/gpt-small"),
        )
        before = len(self.problems)
        trustees = self.at(fields, "trustees", self.trustees, ())
        trustees_wrong = len(self.problems) > before
        triggers = self.at(fields, "triggers", lambda n: self.triggers(n, trustees))
        if "amendment" in fields:
            amendment = self.condition(fields["amendment"], "amendment", trustees, amendment=True)
        elif trustees:
            amendment = AllOf((LabAdmin(), TrusteeVote(len(trustees) // 2 + 1)))
        elif trustees_wrong:
            amendment = None  # the trustees' own problems are reported
        else:
            self.error(
                root,
                "the agreement names no trustees, so the default amendment rule (the lab's "
                "admin and a trustee majority) cannot apply: name trustees, or write an "
                "amendment rule, e.g. amendment: {lab_admin: true}",
            )
            amendment = None
        description = self.at(fields, "description", lambda n: self.string(n, "description"), "")
        if self.problems:
            return None
        assert model is not None and triggers is not None and amendment is not None
        return Agreement(
            model=model,
            trustees=tuple(trustees or ()),
            triggers=triggers,
            amendment=amendment,
            sha256=hashlib.sha256(raw).hexdigest(),
            description=description or "",
        )

    def trustees(self, node: Node) -> tuple[str, ...] | None:
        items = self.sequence(node, "trustees")
        if items is None:
            return None
        found: list[str] = []
        for item in items:
            value = self.string(item, "a trustee")
            if value is None:
                continue
            email = value.strip().lower()
            if not _EMAIL.match(email):
                self.error(item, f"trustee {value[:60]!r} is not an e-mail address")
            elif email in found:
                self.error(item, f"trustee {email!r} is listed twice")
            else:
                found.append(email)
        if len(found) > MAX_TRUSTEES:
            self.error(node, f"{len(found)} trustees, more than {MAX_TRUSTEES}")
        return tuple(found)

    def triggers(self, node: Node, trustees: tuple[str, ...] | None) -> tuple[Trigger, ...] | None:
        items = self.sequence(node, "triggers")
        if items is None:
            return None
        if not items:
            self.error(node, "triggers is empty: an agreement names at least one trigger")
            return None
        found: list[Trigger] = []
        for item in items:
            fields = self.mapping(
                item, "a trigger", ("name", "when", "unlocks"), ("name", "when", "unlocks")
            )
            if fields is None:
                continue
            name = self.at(
                fields, "name", lambda n: self.string(n, "trigger name", _NAME, "e.g. sunset")
            )
            when = None
            if "when" in fields:
                when = self.condition(fields["when"], f"trigger {name}", trustees)
            unlocks = self.at(
                fields,
                "unlocks",
                lambda n: self.string(
                    n, "unlocks", _POLICY_ID, "public, or the id of an access policy"
                ),
            )
            if name is not None and any(t.name == name for t in found):
                self.error(fields["name"], f"trigger name {name!r} is used twice")
                continue
            if name is not None and when is not None and unlocks is not None:
                found.append(Trigger(name, when, unlocks))
        return tuple(found)

    def condition(
        self,
        node: Node,
        what: str,
        trustees: tuple[str, ...] | None,
        *,
        amendment: bool = False,
    ) -> Condition | None:
        kinds = (
            ("lab_admin", "trustee_vote", "all_of", "any_of")
            if amendment
            else (*TRIGGER_KINDS, "all_of", "any_of")
        )
        if not isinstance(node, MappingNode) or len(node.value) != 1:
            self.error(
                node,
                f"{what}: a condition is a mapping with one key, one of {', '.join(kinds)}, "
                "e.g. {lab_silence: {days: 180}}",
            )
            return None
        fields = self.mapping(node, f"{what} condition", kinds, ())
        if not fields:
            return None
        ((kind, value),) = fields.items()
        if kind in ("all_of", "any_of"):
            items = self.sequence(value, f"{what} {kind}")
            if items is None:
                return None
            if len(items) < 2:
                self.error(value, f"{what} {kind} combines at least two conditions")
                return None
            parts = [self.condition(i, what, trustees, amendment=amendment) for i in items]
            if any(p is None for p in parts):
                return None
            return (AllOf if kind == "all_of" else AnyOf)(tuple(p for p in parts if p))
        if kind == "date":
            day = self.date(value, f"{what} date")
            return OnOrAfter(day) if day is not None else None
        if kind == "lab_silence":
            days = self.single(value, f"{what} lab_silence", "days", 0, MAX_SILENCE_DAYS)
            return LabSilence(days) if days is not None else None
        if kind == "trustee_vote":
            count = self.single(value, f"{what} trustee_vote", "count", 1, MAX_TRUSTEES)
            if count is None:
                return None
            named = len(trustees or ())
            if trustees is not None and count > named:
                self.error(
                    value,
                    f"{what} trustee_vote asks for {count} votes but the agreement names "
                    f"{named} trustee{'s' if named != 1 else ''}: add trustees or lower count",
                )
                return None
            return TrusteeVote(count)
        flag = self.boolean(value, f"{what} {kind}")
        if flag is False:
            self.error(value, f"{what} {kind}: false would never be met; remove the condition")
        if not flag:
            return None
        return LabRelease() if kind == "lab_release" else LabAdmin()

    def single(self, node: Node, what: str, key: str, low: int, high: int) -> int | None:
        fields = self.mapping(node, what, (key,), (key,))
        if fields is None or key not in fields:
            return None
        return self.integer(fields[key], f"{what} {key}", low, high)
