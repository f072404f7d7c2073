"""Access policies: the typed model of one policy file, and its validation. Pure.

A policy is a YAML file directly in the policy directory (`$ESCROW_POLICY_DIR`). Its id is the
file's stem, its identity the SHA-256 of the file's bytes (recorded with every decision).

Why typed models and not a JSON Schema: every error must name the file and the line, and the
messages must say what to write instead. We read the YAML as a node tree (`yaml.compose`, which
keeps each node's line) and check it with explicit code into frozen dataclasses; a JSON Schema
would report paths into a plain dict with generic wording, and we would have to map each error
back to a node anyway. All problems of a file are collected, not only the first.

The format (see `policies/examples/` for commented files):

    organisation: acme-ai
    models: ["acme-ai/*"]              # ORG/NAME or ORG/PREFIX*, inside `organisation`
    nda: {id: acme-research-nda, min_version: 1}     # or `nda: null` for no NDA
    eligibility:                       # optional; these are the defaults
      verified_email: true
      email_domains: []                # [] = any; "uni.example" or "*.uni.example"
      affiliations: []                 # [] = any; "faculty@uni.example" or "*@uni.example"
      proven_key: true                 # a proven key (weights only: hosted access,
                                       #   inference and internals, releases no key, so
                                       #   neither this nor require_post_quantum_key applies)
    approvals: {count: 1, role: reviewer, allow_requester_org: false, auto: false}
    grant: {default_days: 14, max_days: 30, releases_per_file: 3, renewal: false}
                                       # inference grants may also have quotas:
                                       #   requests_per_minute: 60, tokens_per_day: 100000
    require_post_quantum_key: false
    embargo_until: 2025-06-01          # optional: no request is allowed before this UTC date
    requires:                          # optional; these are the defaults
      no_overdue_closeouts: false      # true: no grant while one of the requester's ended
      overdue_after_days: 14           #   grants waits for its close-out this long
    description: "…"                   # optional, shown to people
    access: [weights, inference]       # optional; the kinds of access it allows (default
                                       #   [weights]); inference: the model hosted by the escrow;
                                       #   internals: inference plus research views
                                       #   (logprobs, hidden states and attention)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from yaml.nodes import Node

from broker.domain.hosting import REQUESTABLE_KINDS, WEIGHTS
from broker.domain.principals import ORG_ROLES
from broker.errors import ConfigError
from broker.policy.nodes import NodeReader, PolicyProblem, tagged
from broker.policy.patterns import (
    SLUG,
    WILDCARD,
    pattern_key,
    pattern_matches,
    pattern_problem,
    pattern_specificity,
)

__all__ = [
    "MAX_DAYS",
    "MAX_POLICY_BYTES",
    "WILDCARD",
    "Approvals",
    "Eligibility",
    "GrantLimits",
    "NdaRequirement",
    "Policy",
    "PolicyError",
    "Requires",
    "PolicyProblem",
    "parse_policy",
    "pattern_key",
    "pattern_matches",
    "pattern_problem",
    "pattern_specificity",
]

MAX_POLICY_BYTES = 64 * 1024  # a policy, not a data file; keeps a bad file from filling memory
MAX_DAYS = 3650  # a sanity bound on grant durations: ten years is already not "time-limited"

_POLICY_ID = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9])?$")
_NDA_ID = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9])?$")
_NDA_VERSION = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._+-]{0,62}[A-Za-z0-9])?$")
_DOMAIN = re.compile(r"^(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")
_AFFILIATION = re.compile(
    r"^(?:\*|[a-z][a-z0-9_-]{0,63})@"
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$"
)


# --- what a loaded policy is ------------------------------------------------------------------


@dataclass(frozen=True)
class NdaRequirement:
    id: str
    min_version: str  # compared in natural order (broker.domain.nda.version_key)


@dataclass(frozen=True)
class Eligibility:
    verified_email: bool = True
    email_domains: tuple[str, ...] = ()  # empty: any domain
    affiliations: tuple[str, ...] = ()  # empty: any affiliation (or none)
    proven_key: bool = True


@dataclass(frozen=True)
class Approvals:
    count: int  # 0 exactly when `auto`
    role: str = "reviewer"  # a role in the policy's organisation
    allow_requester_org: bool = False  # may members of the requester's own orgs approve?
    auto: bool = False  # allowed as soon as eligible (a qualified denial still refuses)


@dataclass(frozen=True)
class GrantLimits:
    default_days: int
    max_days: int
    releases_per_file: int
    renewal: bool = False
    # An inference grant's quotas (None: no limit); weights grants ignore them
    requests_per_minute: int | None = None
    tokens_per_day: int | None = None


@dataclass(frozen=True)
class Requires:
    """Conditions on the requester's record, beyond eligibility."""

    no_overdue_closeouts: bool = False  # every ended grant closed out within the days below
    overdue_after_days: int = 14


@dataclass(frozen=True)
class Policy:
    id: str  # the file's stem
    path: Path
    sha256: str  # of the file's exact bytes
    organisation: str
    models: tuple[str, ...]  # patterns, each inside `organisation`
    nda: NdaRequirement | None
    eligibility: Eligibility
    approvals: Approvals
    grant: GrantLimits
    require_post_quantum_key: bool = False
    embargo_until: date | None = None  # requests are refused before 00:00 UTC that day
    description: str = ""
    requires: Requires = field(default_factory=Requires)
    access: tuple[str, ...] = (WEIGHTS,)  # the kinds of access it allows (domain.hosting)
    # where keys and model patterns are (line numbers), for cross-file errors; not compared
    lines: dict[str, int] | None = field(default=None, compare=False, repr=False)

    def covers(self, model: str) -> bool:
        return any(pattern_matches(p, model) for p in self.models)

    def specificity(self, model: str) -> tuple[int, int] | None:
        """How specifically this policy names `model` (higher wins), None when it does not."""
        found = [pattern_specificity(p) for p in self.models if pattern_matches(p, model)]
        return max(found) if found else None

    def line_of(self, key: str) -> int:
        return (self.lines or {}).get(key, 1)


# --- errors -------------------------------------------------------------------------------------


class PolicyError(ConfigError):
    """The policy directory has errors; nothing is decided by it until they are fixed."""

    title = "invalid access policies"

    def __init__(self, problems: list[PolicyProblem] | tuple[PolicyProblem, ...]) -> None:
        self.problems = tuple(problems)
        first = self.problems[0] if self.problems else "no problems?"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(
            f"access policies are invalid, so no request can be decided: {first}{more}",
            hint="run `escrow policy check` on the policy directory and fix every error listed",
        )


# --- reading one file ---------------------------------------------------------------------------


def parse_policy(raw: bytes, path: Path) -> tuple[Policy | None, list[PolicyProblem]]:
    """One policy from a file's bytes; `path` names it. Either a policy or every problem found."""
    reader = _Reader(path)
    policy = reader.policy(raw)
    if reader.problems:
        return None, sorted(reader.problems, key=lambda p: p.line)
    return policy, []


_TOP = (
    "organisation",
    "models",
    "nda",
    "eligibility",
    "approvals",
    "grant",
    "require_post_quantum_key",
    "embargo_until",
    "description",
    "requires",
    "access",
)
_TOP_REQUIRED = ("organisation", "models", "nda", "approvals", "grant")


class _Reader(NodeReader):
    """Reads one policy file's sections into the model (values: `NodeReader`)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lines: dict[str, int] = {}

    # the file

    def root(self, raw: bytes) -> Node | None:
        """The file's YAML node tree, after checking its name, size and encoding (None: a
        problem was reported)."""
        if not _POLICY_ID.match(self.path.stem):
            self.error(
                1,
                f"file name {self.path.name!r} is not a valid policy id: name it "
                "with lowercase letters, digits, '.', '_' or '-', e.g. acme-ai.yaml",
            )
        return self.document(
            raw, MAX_POLICY_BYTES, "a policy names at least " + ", ".join(_TOP_REQUIRED)
        )

    def policy(self, raw: bytes) -> Policy | None:
        root = self.root(raw)
        if root is None:
            return None
        fields = self.mapping(root, "the policy", _TOP, _TOP_REQUIRED)
        if fields is None:
            return None
        self.lines.update({key: node.start_mark.line + 1 for key, node in fields.items()})

        organisation = self.at(
            fields,
            "organisation",
            lambda n: self.string(n, "organisation", SLUG, "an organisation name such as acme-ai"),
        )
        models = self.at(fields, "models", lambda n: self.models(n, organisation))
        nda = self.at(fields, "nda", self.nda)
        eligibility = self.at(fields, "eligibility", self.eligibility, Eligibility())
        approvals = self.at(fields, "approvals", self.approvals)
        grant = self.at(fields, "grant", self.grant)
        post_quantum = self.at(
            fields,
            "require_post_quantum_key",
            lambda n: self.boolean(n, "require_post_quantum_key"),
            False,
        )
        embargo = self.at(fields, "embargo_until", lambda n: self.date(n, "embargo_until"))
        description = self.at(fields, "description", lambda n: self.string(n, "description"), "")
        requires = self.at(fields, "requires", self.requires, Requires())
        access = self.at(fields, "access", self.access, (WEIGHTS,))
        if self.problems:
            return None
        assert organisation is not None and models is not None  # no problems: all were read
        assert eligibility is not None and approvals is not None and grant is not None
        return Policy(
            id=self.path.stem,
            path=self.path,
            sha256=hashlib.sha256(raw).hexdigest(),
            organisation=organisation,
            models=models,
            nda=nda,
            eligibility=eligibility,
            approvals=approvals,
            grant=grant,
            require_post_quantum_key=bool(post_quantum),
            embargo_until=embargo,
            description=description or "",
            requires=requires or Requires(),
            access=access or (WEIGHTS,),
            lines=dict(self.lines),
        )

    # sections

    def models(self, node: Node, organisation: str | None) -> tuple[str, ...] | None:
        items = self.sequence(node, "models")
        if items is None:
            return None
        if not items:
            self.error(
                node,
                f"models is empty: name at least one pattern, e.g. {organisation or 'acme-ai'}/*",
            )
            return None
        patterns: list[str] = []
        for item in items:
            pattern = self.string(item, "a model pattern")
            if pattern is None:
                continue
            if pattern in patterns:
                self.error(item, f"model pattern {pattern!r} is listed twice")
                continue
            if organisation is not None:
                problem = pattern_problem(pattern, organisation)
                if problem:
                    self.error(item, problem)
                    continue
            patterns.append(pattern)
            self.lines[pattern_key(pattern)] = item.start_mark.line + 1
        return tuple(patterns)

    def nda(self, node: Node) -> NdaRequirement | None:
        if tagged(node, "null"):
            return None  # written out: this policy deliberately asks for no NDA
        fields = self.mapping(node, "nda", ("id", "min_version"), ("id", "min_version"))
        if fields is None:
            return None
        nda_id = self.at(
            fields,
            "id",
            lambda n: self.string(
                n, "nda id", _NDA_ID, "the id of an NDA text in ndas/, e.g. acme-research-nda"
            ),
        )
        version_node = fields.get("min_version")
        version: str | None
        if version_node is None:
            version = None
        elif tagged(version_node, "int"):
            version = str(self.scalar(version_node))
        elif tagged(version_node, "float"):
            self.error(
                version_node,
                f"nda min_version {version_node.value} reads as a number: "
                f"quote it ('{version_node.value}') so 1.10 stays 1.10",
            )
            version = None
        else:
            version = self.string(
                version_node, "nda min_version", _NDA_VERSION, "an NDA version such as 1 or 2024-05"
            )
        if nda_id is None or version is None:
            return None
        return NdaRequirement(nda_id, version)

    def eligibility(self, node: Node) -> Eligibility | None:
        keys = ("verified_email", "email_domains", "affiliations", "proven_key")
        fields = self.mapping(node, "eligibility", keys, ())
        if fields is None:
            return None
        default = Eligibility()
        verified = self.optional(
            fields, "verified_email", self.boolean, default.verified_email, "eligibility"
        )
        domains = self.patterns(
            fields.get("email_domains"),
            "email domain",
            _DOMAIN,
            "a domain such as uni.example, or *.uni.example for its subdomains",
        )
        affiliations = self.patterns(
            fields.get("affiliations"),
            "affiliation",
            _AFFILIATION,
            "a scoped affiliation such as faculty@uni.example, or *@uni.example for any",
        )
        proven_key = self.optional(
            fields, "proven_key", self.boolean, default.proven_key, "eligibility"
        )
        if None in (verified, domains, affiliations, proven_key):
            return None
        return Eligibility(bool(verified), domains or (), affiliations or (), bool(proven_key))

    def approvals(self, node: Node) -> Approvals | None:
        keys = ("count", "role", "allow_requester_org", "auto")
        fields = self.mapping(node, "approvals", keys, ())
        if fields is None:
            return None
        auto = self.optional(fields, "auto", self.boolean, False, "approvals")
        count = self.optional(
            fields, "count", lambda n, what: self.integer(n, what, 0, 100), None, "approvals"
        )
        role = self.optional(
            fields, "role", lambda n, what: self.choice(n, what, ORG_ROLES), "reviewer", "approvals"
        )
        allow_org = self.optional(fields, "allow_requester_org", self.boolean, False, "approvals")
        if auto is True and count not in (None, 0):
            self.error(
                fields["count"],
                f"approvals: auto is true but count is {count}: "
                "remove count (or set it to 0), or set auto to false",
            )
            return None
        if auto is False and "count" not in fields:
            self.error(node, "approvals needs count (at least 1), or auto: true")
            return None
        if auto is False and count == 0:
            self.error(
                fields["count"],
                "approvals count is 0 without auto: use auto: true "
                "to approve eligible requests automatically",
            )
            return None
        if None in (auto, role, allow_org) or (not auto and count is None):
            return None
        return Approvals(count or 0, str(role), bool(allow_org), bool(auto))

    def grant(self, node: Node) -> GrantLimits | None:
        keys = ("default_days", "max_days", "releases_per_file", "renewal",
                "requests_per_minute", "tokens_per_day")
        fields = self.mapping(
            node, "grant", keys, ("default_days", "max_days", "releases_per_file")
        )
        if fields is None:
            return None
        default_days = self.at(
            fields, "default_days", lambda n: self.integer(n, "grant default_days", 1, MAX_DAYS)
        )
        max_days = self.at(
            fields, "max_days", lambda n: self.integer(n, "grant max_days", 1, MAX_DAYS)
        )
        releases = self.at(
            fields,
            "releases_per_file",
            lambda n: self.integer(n, "grant releases_per_file", 1, 1000),
        )
        renewal = self.optional(fields, "renewal", self.boolean, False, "grant")
        per_minute = self.at(
            fields, "requests_per_minute",
            lambda n: self.integer(n, "grant requests_per_minute", 1, 1_000_000),
        )
        per_day = self.at(
            fields, "tokens_per_day",
            lambda n: self.integer(n, "grant tokens_per_day", 1, 10**12),
        )
        if default_days is not None and max_days is not None and default_days > max_days:
            self.error(
                fields["default_days"],
                f"grant default_days ({default_days}) is longer than max_days ({max_days})",
            )
            return None
        if None in (default_days, max_days, releases, renewal):
            return None
        return GrantLimits(default_days, max_days, releases, bool(renewal), per_minute, per_day)

    def access(self, node: Node) -> tuple[str, ...] | None:
        items = self.sequence(node, "access")
        if items is None:
            return None
        kinds = [self.choice(item, "an access kind", REQUESTABLE_KINDS) for item in items]
        if not items:
            self.error(node, "access is empty: name at least one kind, e.g. [weights]")
        if not items or None in kinds:
            return None
        return tuple(dict.fromkeys(str(kind) for kind in kinds))

    def requires(self, node: Node) -> Requires | None:
        keys = ("no_overdue_closeouts", "overdue_after_days")
        fields = self.mapping(node, "requires", keys, ())
        if fields is None:
            return None
        default = Requires()
        closeouts = self.optional(
            fields, "no_overdue_closeouts", self.boolean, default.no_overdue_closeouts, "requires"
        )
        days = self.optional(
            fields,
            "overdue_after_days",
            lambda n, what: self.integer(n, what, 0, MAX_DAYS),
            default.overdue_after_days,
            "requires",
        )
        if closeouts is None or days is None:
            return None
        return Requires(bool(closeouts), int(days))
