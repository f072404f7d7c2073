"""Reading values out of a YAML node tree (`yaml.compose`, which keeps each node's line): every
problem is collected with the file and line it is on, and worded to say what to write instead.
The policy schema (`schema.py`) builds its sections on these readers."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["NodeReader", "PolicyProblem", "kind", "tagged"]

_TAG = "tag:yaml.org,2002:"


@dataclass(frozen=True)
class PolicyProblem:
    path: Path
    line: int  # 1-based; 1 when the problem is about the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class NodeReader:
    """Reads typed values from nodes; `problems` collects what is wrong, line by line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[PolicyProblem] = []
        self._constructor = SafeConstructor()

    def error(self, where: Node | int, message: str) -> None:
        line = where if isinstance(where, int) else where.start_mark.line + 1
        self.problems.append(PolicyProblem(self.path, line, message))

    def document(self, raw: bytes, max_bytes: int, empty: str) -> Node | None:
        """The node tree of a file's bytes (None: a problem was reported): at most `max_bytes`,
        UTF-8, YAML; `empty` says what the file must name when it has nothing. Policies and
        release agreements (`broker.policy.agreement`) are read through it."""
        if len(raw) > max_bytes:
            self.error(1, f"is {len(raw)} bytes, more than {max_bytes}")
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            self.error(raw[: error.start].count(b"\n") + 1, "is not valid UTF-8")
            return None
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line = mark.line + 1 if mark else 1
            context = ""
            if error.context and error.context_mark and error.problem:
                context = f" ({error.context} started on line {error.context_mark.line + 1})"
            self.error(line, f"is not valid YAML: {error.problem or error.context}{context}")
            return None
        except yaml.YAMLError as error:
            self.error(1, f"is not valid YAML: {error}")
            return None
        if root is None:
            self.error(1, f"is empty: {empty}")
        return root

    def mapping(
        self, node: Node, what: str, allowed: tuple[str, ...], required: tuple[str, ...]
    ) -> dict[str, Node] | None:
        if not isinstance(node, MappingNode):
            self.error(node, f"{what} must be a mapping of keys to values, found {kind(node)}")
            return None
        fields: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == "<<":
                self.error(key_node, f"{what} uses a YAML merge key ('<<'); write the keys out")
                continue
            if not (isinstance(key_node, ScalarNode) and tagged(key_node, "str")):
                self.error(key_node, f"{what} has a key that is not a plain name")
                continue
            key = key_node.value
            if key not in allowed:
                self.error(
                    key_node,
                    f"{what} has an unknown key {key!r}; expected one of {', '.join(allowed)}",
                )
            elif key in fields:
                self.error(key_node, f"{what} has the key {key!r} twice")
            else:
                fields[key] = value_node
        for key in required:
            if key not in fields and key in allowed:
                self.error(node, f"{what} lacks {key!r}")
        return fields

    def at(
        self, fields: dict[str, Node], key: str, read: Callable[[Node], Any], default: Any = None
    ) -> Any:
        """Read `fields[key]` when present (a missing required key was reported already)."""
        return read(fields[key]) if key in fields else default

    def scalar(self, node: Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def string(
        self, node: Node, what: str, pattern: re.Pattern[str] | None = None, expected: str = ""
    ) -> str | None:
        if not (isinstance(node, ScalarNode) and tagged(node, "str")):
            self.error(node, f"{what} must be a string, found {kind(node)}")
            return None
        value: str = node.value
        if pattern is not None and not pattern.match(value):
            self.error(node, f"{what} {value[:60]!r} is not valid: use {expected}")
            return None
        return value

    def choice(self, node: Node, what: str, choices: tuple[str, ...]) -> str | None:
        value = self.string(node, what)
        if value is not None and value not in choices:
            self.error(node, f"{what} {value!r} is unknown; use one of {', '.join(choices)}")
            return None
        return value

    def boolean(self, node: Node, what: str) -> bool | None:
        if not (isinstance(node, ScalarNode) and tagged(node, "bool")):
            self.error(node, f"{what} must be true or false, found {kind(node)}")
            return None
        return bool(self.scalar(node))

    def integer(self, node: Node, what: str, low: int, high: int) -> int | None:
        if not (isinstance(node, ScalarNode) and tagged(node, "int")):
            self.error(node, f"{what} must be a whole number, found {kind(node)}")
            return None
        value = int(self.scalar(node))
        if not low <= value <= high:
            self.error(node, f"{what} is {value}, expected {low} to {high}")
            return None
        return value

    def date(self, node: Node, what: str) -> date | None:
        value: date | None = None
        if isinstance(node, ScalarNode) and (tagged(node, "timestamp") or tagged(node, "str")):
            try:
                value = date.fromisoformat(node.value)
            except ValueError:
                value = None
        if value is None:
            self.error(
                node,
                f"{what} must be a date such as 2025-06-01, found "
                f"{node.value if isinstance(node, ScalarNode) else kind(node)!r}",
            )
        return value

    def sequence(self, node: Node, what: str) -> list[Node] | None:
        if not isinstance(node, SequenceNode):
            self.error(node, f"{what} must be a list, found {kind(node)}")
            return None
        return list(node.value)

    def patterns(
        self, node: Node | None, what: str, pattern: re.Pattern[str], expected: str
    ) -> tuple[str, ...] | None:
        if node is None:
            return ()
        items = self.sequence(node, what + "s")
        if items is None:
            return None
        values: list[str] = []
        ok = True
        for item in items:
            value = self.string(item, f"{what}")
            if value is None:
                ok = False
            elif not pattern.match(value.lower()):
                self.error(item, f"{what} {value[:60]!r} is not valid: use {expected}")
                ok = False
            else:
                values.append(value.lower())
        return tuple(values) if ok else None

    def optional(
        self,
        fields: dict[str, Node],
        key: str,
        read: Callable[[Node, str], Any],
        default: Any,
        section: str,
    ) -> Any:
        return read(fields[key], f"{section} {key}") if key in fields else default


def tagged(node: Node, tag: str) -> bool:
    return node.tag == _TAG + tag


def kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    names = {
        "str": "a string",
        "int": "a number",
        "float": "a number",
        "bool": "true/false",
        "null": "nothing",
        "timestamp": "a date",
    }
    found = names.get(node.tag.removeprefix(_TAG), f"a value tagged {node.tag}")
    return f"{found} ({node.value[:40]!r})" if node.value else found
