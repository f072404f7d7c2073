"""The policy directory: load every policy file, check them as a whole, match models, reload.

Policies are the `*.yaml` (or `*.yml`) files directly in the directory; subdirectories such as
`examples/` (commented samples) and `ndas/` (NDA texts) are never read as policies. Files whose
name starts with '.' (editor swap files) are ignored.

Checks across files: policy ids (file stems) are unique; no model pattern appears in two files
(two equally specific matches would make the decision depend on file order); each NDA a policy
names exists in `ndas/`, belongs to the policy's organisation and has a text at or above the
minimum version (otherwise nobody could ever satisfy the policy). A missing directory, or one with
no policy file, is an error: a misconfigured `$ESCROW_POLICY_DIR` must not look like "no model
can be requested" by accident.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from broker.domain.nda import NdaLibrary, NdaTextError, load_library, version_key
from broker.errors import NotFound
from broker.policy.patterns import pattern_key, pattern_specificity
from broker.policy.schema import (
    Policy,
    PolicyError,
    PolicyProblem,
    parse_policy,
)

POLICY_SUFFIXES = (".yaml", ".yml")
NDA_DIRECTORY = "ndas"


@dataclass(frozen=True)
class PolicySet:
    """The policies of a directory, checked as a whole. Nothing matches by default."""

    policies: tuple[Policy, ...]

    def match(self, model: str) -> Policy | None:
        """The policy naming `model` most specifically (exact > longer prefix), or None."""
        best: list[tuple[tuple[int, int], Policy]] = []
        for policy in self.policies:
            found = policy.specificity(model)
            if found is None:
                continue
            if not best or found > best[0][0]:
                best = [(found, policy)]
            elif found == best[0][0]:
                best.append((found, policy))
        if len(best) > 1:  # refused at load time; kept so that a bug cannot pick one silently
            raise PolicyError(
                [
                    PolicyProblem(
                        p.path, 1, f"matches {model} as specifically as {best[0][1].path}"
                    )
                    for _, p in best[1:]
                ]
            )
        return best[0][1] if best else None

    def get(self, policy_id: str) -> Policy:
        for policy in self.policies:
            if policy.id == policy_id:
                return policy
        raise NotFound(
            f"policy {policy_id!r} does not exist",
            hint="list the policies with `escrow policy check`",
        )

    def __iter__(self) -> Iterator[Policy]:
        return iter(self.policies)

    def __len__(self) -> int:
        return len(self.policies)


def policy_files(directory: Path) -> list[Path]:
    """The files of `directory` read as policies, in name order."""
    return sorted(
        path
        for path in directory.iterdir()
        if path.suffix in POLICY_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def check_policies(directory: Path) -> tuple[PolicySet | None, list[PolicyProblem]]:
    """Every policy of `directory`, or every problem found (all files, then across files)."""
    if not directory.is_dir():
        return None, [
            PolicyProblem(
                directory,
                1,
                "the policy directory does not exist "
                "(set ESCROW_POLICY_DIR to the directory of policy files)",
            )
        ]
    files = policy_files(directory)
    if not files:
        return None, [
            PolicyProblem(
                directory,
                1,
                "the policy directory has no policy file (*.yaml): no model could be requested",
            )
        ]
    problems: list[PolicyProblem] = []
    policies: list[Policy] = []
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as error:
            problems.append(PolicyProblem(path, 1, f"cannot be read: {error.strerror}"))
            continue
        policy, found = parse_policy(raw, path)
        problems.extend(found)
        if policy is not None:
            policies.append(policy)
    problems.extend(_across_files(policies))
    problems.extend(_nda_problems(policies, directory / NDA_DIRECTORY))
    if problems:
        return None, problems
    return PolicySet(tuple(policies)), []


def load_policies(directory: Path) -> PolicySet:
    """`check_policies`, raising `PolicyError` (listing every problem) when there is any."""
    policies, problems = check_policies(directory)
    if problems or policies is None:
        raise PolicyError(problems)
    return policies


def _across_files(policies: list[Policy]) -> list[PolicyProblem]:
    problems: list[PolicyProblem] = []
    ids: dict[str, Policy] = {}
    for policy in policies:
        other = ids.setdefault(policy.id, policy)
        if other is not policy:
            problems.append(
                PolicyProblem(
                    policy.path,
                    1,
                    f"policy id {policy.id!r} is also the "
                    f"id of {other.path}: rename one of the files",
                )
            )
    owners: dict[str, Policy] = {}
    for policy in policies:
        for pattern in policy.models:
            other = owners.setdefault(pattern, policy)
            if other is not policy:
                line = other.line_of(pattern_key(pattern))
                kind = "exact name" if pattern_specificity(pattern)[0] else "pattern"
                problems.append(
                    PolicyProblem(
                        policy.path,
                        policy.line_of(pattern_key(pattern)),
                        f"model {kind} {pattern!r} is also in {other.path}:{line}: two equally "
                        f"specific policies for the same models; keep it in one file",
                    )
                )
    return problems


def _nda_problems(policies: list[Policy], nda_directory: Path) -> list[PolicyProblem]:
    """Each named NDA exists, is the organisation's own and has a text ≥ the minimum version."""
    if not any(policy.nda for policy in policies):
        return []
    try:
        library = load_library(nda_directory)
    except NdaTextError as error:
        where = f"{error.path}:{error.line}" if error.line else str(error.path)
        what = error.message.removeprefix(f"NDA text {where}: ")
        return [PolicyProblem(error.path, error.line or 1, f"NDA text: {what}")]
    problems = []
    for policy in policies:
        if policy.nda is not None:
            problem = _nda_problem(policy, library, nda_directory)
            if problem:
                problems.append(PolicyProblem(policy.path, policy.line_of("nda"), problem))
    return problems


def _nda_problem(policy: Policy, library: NdaLibrary, nda_directory: Path) -> str | None:
    assert policy.nda is not None
    texts = [text for text in library.texts if text.id == policy.nda.id]
    if not texts:
        known = ", ".join(library.ids()) or "none"
        return (
            f"NDA {policy.nda.id!r} has no text in {nda_directory} (known: {known}); add "
            f"the text or fix the id"
        )
    if texts[0].organisation != policy.organisation:
        return (
            f"NDA {policy.nda.id!r} belongs to {texts[0].organisation!r}, not to "
            f"{policy.organisation!r}"
        )
    minimum = version_key(policy.nda.min_version)
    if not any(version_key(text.version) >= minimum for text in texts):
        versions = ", ".join(sorted((t.version for t in texts), key=version_key))
        return (
            f"NDA {policy.nda.id!r} has no version {policy.nda.min_version} or later "
            f"(it has {versions}): nobody could sign what this policy asks for"
        )
    return None


# --- reloading without a restart ---------------------------------------------------------------


class PolicyLibrary:
    """The policies of a directory, re-read when a file is added, removed or changed.

    Each call compares the directory's stat fingerprint (names, sizes, mtimes, inodes of the
    policy files and the NDA texts) with the one last loaded: a few `stat` calls, no reads.

    Fail closed: when the directory, as it is now, has an error, `current()` and `match()` raise
    `PolicyError` naming the file and line, instead of keeping the last good set. A request must
    not be decided by a stale policy (the operator may have been tightening it) nor by a broken
    one; the refusal is loud, and the next call after the fix loads the new set.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._fingerprint: tuple[object, ...] | None = None
        self._policies: PolicySet | None = None
        self._problems: list[PolicyProblem] = []

    def current(self) -> PolicySet:
        fingerprint = self.fingerprint()  # before reading: a change during the read reloads
        with self._lock:
            if fingerprint != self._fingerprint:
                self._policies, self._problems = check_policies(self.directory)
                self._fingerprint = fingerprint
            if self._problems or self._policies is None:
                raise PolicyError(self._problems)
            return self._policies

    def match(self, model: str) -> Policy | None:
        return self.current().match(model)

    def fingerprint(self) -> tuple[object, ...]:
        return (
            _stats(self.directory, POLICY_SUFFIXES),
            _stats(self.directory / NDA_DIRECTORY, (".md",)),
        )


def _stats(directory: Path, suffixes: tuple[str, ...]) -> tuple[object, ...]:
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return ("missing",)
    except OSError as error:
        return ("unreadable", error.errno)
    found = []
    for entry in entries:
        if entry.name.endswith(suffixes) and not entry.name.startswith("."):
            try:
                st = entry.stat()
            except OSError:
                continue
            found.append((entry.name, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
    return tuple(sorted(found))
