"""A deployment in one place (issue 15 items 2, 4, 5, 9, 11): `escrow init` records it in
`deployment.json`, operator commands refuse any other folder, the audit log's origin is fixed at
init whatever the public URL later is, and `escrow serve --port N` is reached at port N."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from live import ESCROW_BIN, free_port, postgres_url, start_broker

from broker.cli.serving import stop_group, wait_until_serving


def bare_env(**settings: str) -> dict[str, str]:
    """The environment of a new user: no ESCROW_* setting but those given."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")}, **settings}


def escrow(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ESCROW_BIN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "command",
    [
        ["verify", "0123"],
        ["worker", "--once"],
        ["admin", "org", "list"],
        ["fixity", "run"],
        ["recover"],
        ["serve", "--port", "1"],
        ["db", "upgrade"],
        ["audit", "verify"],
        ["admin", "login-link", "ada@uni.example"],
    ],
)
def test_operator_commands_refuse_a_folder_that_is_not_a_deployment(
    tmp_path: Path, command: list[str]
) -> None:
    result = escrow(tmp_path, bare_env(), *command)
    assert result.returncode == 1, result.stderr
    default = tmp_path / "escrow-data"
    assert f"the data directory {default} does not exist; nothing was done" in result.stderr
    assert "point ESCROW_DATA_DIR at the deployment's data directory" in result.stderr
    assert "run `escrow init`" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no second, empty deployment was made


def test_init_records_the_deployment_and_its_origin_stays(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = bare_env(ESCROW_DATA_DIR=str(data), ESCROW_PUBLIC_URL="https://escrow.example.org/")
    made = escrow(tmp_path, env, "init")
    assert made.returncode == 0, made.stderr
    record = data / "deployment.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    recorded = json.loads(record.read_text())
    assert recorded["origin"] == "weights-escrow/escrow.example.org"
    assert (
        recorded["public_url_at_init"] == recorded["public_url"] == ("https://escrow.example.org")
    )
    assert recorded["data_dir"] == str(data)

    again = escrow(tmp_path, {**env, "ESCROW_PUBLIC_URL": "https://other.example"}, "init")
    assert again.returncode == 0, again.stderr
    assert json.loads(record.read_text()) == recorded  # init again changes nothing

    other = escrow(
        tmp_path, {**env, "ESCROW_ORIGIN": "weights-escrow/other"}, "admin", "org", "list"
    )
    assert other.returncode == 1
    assert "differs from this deployment's origin 'weights-escrow/escrow.example.org'" in (
        other.stderr
    )
    assert "unset ESCROW_ORIGIN" in other.stderr
    same = escrow(tmp_path, {**env, "ESCROW_ORIGIN": recorded["origin"]}, "admin", "org", "list")
    assert same.returncode == 0, same.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    elsewhere = escrow(tmp_path, bare_env(ESCROW_DATA_DIR=str(empty)), "verify", "x")
    assert f"the data directory {empty} is not an initialised deployment" in elsewhere.stderr


def test_the_origin_is_fixed_at_init_when_the_port_changes(tmp_path: Path) -> None:
    """`make demo PORT=18000` then `make run PORT=18001` on the same data: the log verifies."""
    broker = start_broker(tmp_path, {"ESCROW_CHECKPOINT_INTERVAL_S": "1"})
    try:
        at_init = "weights-escrow/" + broker.url.split("://", 1)[1]
        first = broker.escrow("audit", "checkpoint").stdout.splitlines()[0]
        broker.stop()
        moved = f"http://127.0.0.1:{free_port()}"
        broker.url = moved
        broker.env.update(ESCROW_PUBLIC_URL=moved, ESCROW_BROKER=moved)
        broker.start()
        broker.escrow("admin", "org", "create", "beta-lab")
        second = broker.escrow("audit", "checkpoint").stdout.splitlines()[0]
        assert first == second == at_init
        verified = broker.escrow("audit", "verify", "--json", check=False)
        assert verified.returncode == 0, verified.stderr
    finally:
        broker.stop()


def test_serve_on_a_port_takes_a_deposit_with_no_other_setting(tmp_path: Path) -> None:
    env = bare_env(
        ESCROW_DATA_DIR=str(tmp_path / "data"), ESCROW_CONFIG_DIR=str(tmp_path / "client-config")
    )
    assert escrow(tmp_path, env, "init").returncode == 0
    assert escrow(tmp_path, env, "admin", "org", "create", "acme-ai").returncode == 0
    token = (
        escrow(tmp_path, env, "admin", "token", "create", "--org", "acme-ai", "--role", "depositor")
        .stdout.strip()
        .splitlines()[-1]
    )
    (tmp_path / "tok").write_text(token + "\n")
    model = tmp_path / "gpt-small"
    model.mkdir()
    (model / "model.safetensors").write_bytes(os.urandom(200_000))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "broker.log"
    server = subprocess.Popen(
        [ESCROW_BIN, "serve", "--port", str(port), "--workers", "2"],
        cwd=tmp_path,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert wait_until_serving(url, server, timeout_s=30), log.read_text()
        deposited = escrow(
            tmp_path,
            env,
            "deposit",
            str(model),
            "--model",
            "acme-ai/gpt-small",
            "--version",
            "1",
            "--broker",
            url,
            "--token-file",
            str(tmp_path / "tok"),
            "--json",
        )
        assert deposited.returncode == 0, deposited.stderr
        assert json.loads(deposited.stdout.strip().splitlines()[-1])["state"] == "sealed"
        # operator commands run without ESCROW_PUBLIC_URL name the broker where it is served
        assert (
            escrow(
                tmp_path, env, "admin", "user", "create", "--email", "ada@uni.example"
            ).returncode
            == 0
        )
        link = escrow(tmp_path, env, "admin", "login-link", "ada@uni.example")
        assert link.returncode == 0, link.stderr
        assert link.stdout.startswith(f"{url}/auth/link/")
    finally:
        stop_group(server)
    recorded = json.loads((tmp_path / "data" / "deployment.json").read_text())
    assert recorded["public_url"] == url
    assert recorded["origin"] == "weights-escrow/127.0.0.1:8080"  # fixed at init


def test_recover_on_a_database_without_a_schema_says_what_to_run_first(
    tmp_path: Path, postgres_template
) -> None:
    env = bare_env(ESCROW_DATA_DIR=str(tmp_path / "data"))
    assert escrow(tmp_path, env, "init").returncode == 0
    (tmp_path / "data" / "escrow.db").unlink()
    lost = escrow(tmp_path, env, "recover")
    assert lost.returncode == 1
    assert "has no schema yet; nothing was done" in lost.stderr
    assert "run `escrow init` with the same settings" in lost.stderr
    assert "Traceback" not in lost.stderr

    missing = escrow(
        tmp_path, {**env, "ESCROW_DATABASE_URL": postgres_url("escrow_never_created")}, "recover"
    )
    assert missing.returncode == 1
    assert 'database "escrow_never_created" does not exist' in missing.stderr
    assert "createdb" in missing.stderr and "Traceback" not in missing.stderr


def test_version() -> None:
    result = subprocess.run([ESCROW_BIN, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.startswith("escrow ") and result.stdout.split()[1][0].isdigit()


def test_init_against_a_store_with_a_log_takes_the_logs_origin(escrow, tmp_path: Path) -> None:
    """A deployment rebuilt from its bucket into a new data directory keeps its log's name,
    whatever its public URL is now."""
    from broker.config import load_settings
    from broker.services import audit
    from broker.services.setup import initialise

    with escrow.uow() as uow:
        audit.sign_checkpoint(escrow, uow)
    objects = escrow.settings.data_dir / "objects"
    env = {
        "ESCROW_DATA_DIR": str(tmp_path / "rebuilt"),
        "ESCROW_STORAGE_URL": objects.as_uri(),
        "ESCROW_KEY_FILE": str(escrow.settings.key_file),
        "ESCROW_PUBLIC_URL": "https://somewhere-else.example",
    }
    rebuilt, created = initialise(load_settings(env))
    try:
        assert (
            rebuilt.settings.origin == escrow.settings.origin == ("weights-escrow/127.0.0.1:8080")
        )
        assert any("run `escrow recover`" in line for line in created)
        assert load_settings(env).origin == escrow.settings.origin  # recorded
    finally:
        rebuilt.engine.dispose()
