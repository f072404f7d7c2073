"""The wheel carries everything the broker needs at run time.

Built from a copy of the source tree, installed into a fresh virtualenv outside the checkout, and
run from an empty folder: `escrow init`, `escrow demo`, `escrow audit verify`. The fresh venv
gets the wheel alone; its dependencies come from this test's own venv through a `.pth` path line
(a plain path entry: the `.pth` files there, the editable install of the checkout among them,
are not run), so only the wheel can provide `broker`, its migrations, policies and templates.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from live import free_port

REPO = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "node_modules",
    "escrow-data",
    ".pytest_cache",
    ".ruff_cache",
    "test-artifacts",
)


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} exited {result.returncode}\n"
        f"stdout: {result.stdout[-4000:]}\nstderr: {result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel` of a clean copy of the source tree (no stale build/ of the checkout)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE, symlinks=True)
    built = run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(base / "dist")]
    )
    # setuptools names each undeclared data folder (once ~300 lines for broker.web.templates)
    assert "is absent from the `packages` configuration" not in built.stdout + built.stderr
    (found,) = (base / "dist").glob("weights_escrow-*.whl")
    return found


def test_the_wheel_holds_the_migrations_policies_nda_and_templates(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())

    def shipped(folder: str, pattern: str, inside: str) -> None:
        expected = {
            f"{inside}/{path.relative_to(REPO / folder).as_posix()}"
            for path in (REPO / folder).glob(pattern)
        }
        assert expected, f"nothing matches {folder}/{pattern} in the checkout"
        assert expected <= names, sorted(expected - names)

    shipped("migrations", "*.py", "broker/migrations")
    shipped("migrations", "script.py.mako", "broker/migrations")
    shipped("migrations", "versions/*.py", "broker/migrations")
    shipped("policies", "*.yaml", "broker/policies")
    shipped("policies", "ndas/*.md", "broker/policies")
    shipped("policies", "examples/*.yaml", "broker/policies")
    shipped("broker/web", "templates/**/*.html", "broker/web")
    assert "broker/policies/ndas/acme-research-nda-v1.md" in names
    assert "broker/migrations/env.py" in names
    # every package of broker/ is listed in pyproject.toml (the list is explicit)
    packages = {p.relative_to(REPO).as_posix() for p in (REPO / "broker").rglob("__init__.py")}
    assert packages <= names, sorted(packages - names)
    assert not any(name.startswith(("tests/", "migrations/", "policies/")) for name in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "escrow = broker.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_from_the_wheel_in_an_empty_folder_init_demo_and_audit_verify_work(
    wheel: Path, tmp_path: Path
):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ]
    )
    # The dependencies: this venv's site-packages as a plain path (after the fresh venv's own).
    fresh = Path(
        run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            env={"PATH": os.environ["PATH"]},
        ).stdout.strip()
    )
    ours = dict.fromkeys(sysconfig.get_paths()[kind] for kind in ("purelib", "platlib"))
    (fresh / "escrow_test_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))

    work = tmp_path / "empty"
    work.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ESCROW_", "PYTHON", "VIRTUAL_ENV", "XDG_"))
        },
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path / "home"),  # the client's pins and checkpoints: ~/.config/escrow
        "ESCROW_PUBLIC_URL": url,  # as `make demo` sets it
    }

    located = run([str(python), "-c", "import broker; print(broker.__file__)"], cwd=work, env=env)
    assert Path(located.stdout.strip()).is_relative_to(fresh), located.stdout  # not the checkout

    escrow = str(venv / "bin" / "escrow")
    run([escrow, "init"], cwd=work, env=env)
    demo = run([escrow, "demo", "--broker", url, "--json"], cwd=work, env=env)
    summary = json.loads(demo.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["started_broker"] is True
    assert summary["byte_identical"] and summary["revoked"] and summary["refused"]
    verified = run([escrow, "audit", "verify", "--json"], cwd=work, env=env)
    assert json.loads(verified.stdout.strip().splitlines()[-1])["ok"] is True
    # the web pages render from the wheel's templates (the demo's model is on the home page)
    page = run(
        [str(python), "-c", "from broker import create_app; "
         "r = create_app().test_client().get('/'); print(r.status_code, r.get_data(True))"],
        cwd=work,
        env=env,
    )  # fmt: skip
    assert page.stdout.startswith("200 ") and "acme-ai/demo-gpt" in page.stdout, page.stdout[:500]
    assert sorted(p.name for p in work.iterdir()) == ["escrow-data"]
