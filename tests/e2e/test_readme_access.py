"""The README's Access section runs as written (issue 15): its shell commands, and the console
bootstrap of "## People" they rely on, against a real `escrow serve`.

Each person has their own HOME (so `~/.config/escrow/key.txt` and `./gpt-small` are theirs)
and logs in as the README says for a console bootstrap: `escrow admin login-link` gives a
single-use web login, and `escrow login BROKER` is approved on `/device` in that browser (the
stand-in for OIDC). Placeholders `<request-id>` and `<grant-id>` take the ids the commands
before printed. Comment lines name who runs the commands below them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from live import ESCROW_BIN, start_broker
from login.conftest import RealBrowser

README = Path(__file__).resolve().parents[2] / "README.md"
FILES = {"config.json": b'{"layers": 2}\n', "weights/model.safetensors": os.urandom(200_000)}


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def blocks(text: str) -> list[str]:
    return re.findall(r"^ *```\n(.*?)^ *```", text, re.S | re.M)


def commands(block: str) -> list[str]:
    """The block's lines, continuations joined; comment lines kept (they name who runs)."""
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def bootstrap_lines() -> list[str]:
    """The console bootstrap of "## People": the `escrow admin …` lines of its first block."""
    (first, *_) = blocks(section("People"))
    return [c for c in commands(first) if c.startswith("escrow admin ")]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    # no ESCROW_BROKER: a person's commands find the broker from their stored login
    process = start_broker(tmp_path_factory.mktemp("readme"))
    process.env.pop("ESCROW_BROKER", None)
    yield process
    process.stop()


class Terminal:
    """A person's shell: their own HOME and working folder, no service token."""

    def __init__(self, broker, home: Path) -> None:
        home.mkdir(parents=True)
        self.home = home
        self.env = {k: v for k, v in broker.env.items()
                    if not k.startswith("ESCROW_") and k not in ("XDG_CONFIG_HOME",)}
        self.env.update(HOME=str(home), PATH=f"{Path(ESCROW_BIN).parent}:{os.environ['PATH']}")

    def run(self, line: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", line], cwd=self.home, env=self.env,
                              capture_output=True, text=True, timeout=300, check=False)


def console(broker, line: str) -> subprocess.CompletedProcess:
    """A line run at the server console: the broker's own settings, in its folder."""
    env = {k: v for k, v in broker.env.items() if k != "ESCROW_TOKEN"}
    env["PATH"] = f"{Path(ESCROW_BIN).parent}:{os.environ['PATH']}"
    result = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
    return result


def log_in(broker, terminal: Terminal, link_output: str) -> None:
    """Follow the login link in a browser, then `escrow login BROKER` approved on /device."""
    (link,) = re.findall(r"https?://\S+/auth/link/\S+", link_output)
    browser = RealBrowser(broker.url)
    browser.log_in_with_link(link)
    login = subprocess.Popen([ESCROW_BIN, "login", broker.url, "--json"], env=terminal.env,
                             cwd=terminal.home, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        pending = json.loads(login.stdout.readline())
        assert "Terminal login approved" in browser.answer(pending["verification_uri_complete"])
        out, err = login.communicate(timeout=60)
    finally:
        login.kill()
    assert login.returncode == 0, err


def test_the_readme_access_walkthrough_runs_as_written(broker, tmp_path):
    # the deposit the walkthrough fetches (the README's "A deposit, end to end")
    model = tmp_path / "gpt-small"
    for path, data in FILES.items():
        (model / path).parent.mkdir(parents=True, exist_ok=True)
        (model / path).write_bytes(data)
    deposited = broker.escrow("deposit", str(model), "--model", "acme-ai/gpt-small",
                              "--version", "2024-05", "--broker", broker.url, "--json")
    assert broker.last_json(deposited)["state"] == "sealed"

    # ## People: the console bootstrap, as written (Ada, admin of acme-ai, and her login link)
    lines = bootstrap_lines()
    assert [c.split()[:3] for c in lines] == [
        ["escrow", "admin", "user"], ["escrow", "admin", "role"], ["escrow", "admin", "login-link"]]
    outputs = [console(broker, line) for line in lines]
    ada = Terminal(broker, tmp_path / "ada")
    log_in(broker, ada, outputs[-1].stdout)
    # the researcher logs in with OIDC; here the same console bootstrap stands in for it
    console(broker, 'escrow admin user create --email rosa@uni.example --name "Rosa Franklin"')
    rosa = Terminal(broker, tmp_path / "rosa")
    log_in(broker, rosa, console(broker, "escrow admin login-link rosa@uni.example").stdout)

    (walkthrough,) = blocks(section("Access"))
    who, seen, ran = rosa, {"request": "", "grant": ""}, []
    for line in commands(walkthrough):
        if line.startswith("#"):
            who = ada if re.search(r"\breviewer\b", line) else rosa
            continue
        for name in seen:
            if f"<{name}-id>" in line:
                assert seen[name], f"no {name} id printed before: {line}"
                line = line.replace(f"<{name}-id>", seen[name])
        result = who.run(line)
        assert result.returncode == 0, f"{line}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        for name, prefix in (("request", "rq_"), ("grant", "gr_")):
            found = re.findall(rf"\b{prefix}[0-9a-f]{{16}}\b", result.stdout)
            if found:
                seen[name] = found[-1]
        ran.append((line, result.stdout))

    assert any(line.startswith("escrow review approve") for line, _ in ran)
    approved = next(out for line, out in ran if line.startswith("escrow review approve"))
    assert "approved" in approved and "pending" not in approved
    for path, data in FILES.items():  # fetched and decrypted in Rosa's folder
        assert (rosa.home / "gpt-small" / path).read_bytes() == data
        assert (rosa.home / "gpt-small-age" / (path + ".age")).stat().st_size > len(data)
    key = rosa.home / ".config" / "escrow" / "key.txt"
    assert key.stat().st_mode & 0o777 == 0o600
    revoked = rosa.run("escrow grants --json")
    assert [g["state"] for g in json.loads(revoked.stdout.splitlines()[-1])["grants"]] == [
        "revoked"]
