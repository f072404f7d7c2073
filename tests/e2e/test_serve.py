import json
import stat
import urllib.request


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def test_init_makes_a_private_master_key_outside_the_objects_root(broker_server):
    key = broker_server.data_dir / "keys" / "master.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    objects = broker_server.data_dir / "objects"
    assert not key.resolve().is_relative_to(objects.resolve())


def test_serve_reports_health_and_publishes_keys(broker_server):
    health = get_json(broker_server.url + "/healthz")
    assert health["ok"] is True
    keys = get_json(broker_server.url + "/api/v1/keys")
    assert set(keys) == {"manifest", "checkpoint"}


def test_init_is_safe_to_run_again(broker_server):
    before = (broker_server.data_dir / "keys" / "master.key").read_bytes()
    broker_server.escrow("init")
    assert (broker_server.data_dir / "keys" / "master.key").read_bytes() == before


def test_admin_commands_print_json_as_the_last_line(broker_server):
    created = broker_server.escrow("admin", "org", "create", "other-lab", "--json")
    assert broker_server.last_json(created) == {"org": "other-lab"}
    listed = broker_server.last_json(broker_server.escrow("admin", "org", "list", "--json"))
    assert listed["orgs"] == ["acme-ai", "other-lab"]


def test_an_unknown_organisation_gets_a_message_and_a_hint(broker_server):
    result = broker_server.escrow("admin", "token", "create", "--org", "nobody", "--role",
                                  "depositor", check=False)
    assert result.returncode == 1
    assert "organisation 'nobody' does not exist" in result.stderr
    assert "escrow admin org create nobody" in result.stderr
    assert "Traceback" not in result.stderr
