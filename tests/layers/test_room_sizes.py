"""Rooms of a livable size (issue 16): no module under broker/ over 500 lines, and no function
over 60 lines unless it says why it is long.

A long function that should stay whole (a loop whose parts share state, an app factory that
registers routes) carries a comment starting `# long:` with the reason, on the line just above
its `def` (above its decorators, if any) or on the first line of its body. Read from the source
with `ast`: a function's length runs from its `def` line to its last line, nested functions
counted in it and on their own."""

from __future__ import annotations

import ast
from pathlib import Path

import broker

ROOT = Path(broker.__file__).parent
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
REASON = "# long:"


def _sources() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def _says_why(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A `# long:` comment on the line just above the def (above its first decorator), or
    opening the body: on a line from the def's to the first statement's."""
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    candidates = lines[max(first - 2, 0) : first - 1] + lines[node.lineno : node.body[0].lineno]
    return any(line.strip().startswith(REASON) for line in candidates)


def long_functions() -> list[str]:
    found = []
    for path in _sources():
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text, str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES and not _says_why(lines, node):
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name}: "
                             f"{length} lines")
    return found


def long_modules() -> list[str]:
    found = []
    for path in _sources():
        count = len(path.read_text().splitlines())
        if count > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(ROOT.parent)}: {count} lines")
    return found


def test_no_module_is_over_500_lines() -> None:
    offenders = long_modules()
    print("\n".join(offenders))
    assert not offenders, (
        f"modules over {MAX_MODULE_LINES} lines (split them where there is a seam): "
        + "; ".join(offenders)
    )


def test_no_function_is_over_60_lines_without_a_reason() -> None:
    offenders = long_functions()
    print("\n".join(offenders))
    assert not offenders, (
        f"functions over {MAX_FUNCTION_LINES} lines with no `{REASON} why` comment above the "
        "def or on the body's first line (split them into named pieces, or say why not): "
        + "; ".join(offenders)
    )


def test_the_checks_see_a_long_function_and_its_reason(tmp_path: Path) -> None:
    """The reason is found above the def, above its decorators and on the body's first line;
    a comment elsewhere does not count."""
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    cases = {
        f"def f():\n{body}": False,
        f"# long: a reason\ndef f():\n{body}": True,
        f"# long: a reason\n@decorator\ndef f():\n{body}": True,
        f"def f():\n    # long: a reason\n{body}": True,
        f"def f():\n{body}    # long: too late\n": False,
    }
    for source, said in cases.items():
        lines = source.splitlines()
        [node] = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)]
        assert node.end_lineno is not None and node.end_lineno - node.lineno + 1 > 60
        assert _says_why(lines, node) is said, source.splitlines()[:3]
