def test_an_operator_bootstraps_a_user_with_roles_and_a_login_link(broker_server):
    created = broker_server.escrow("admin", "user", "create", "--email", "ada@acme.example",
                                   "--name", "Ada Lovelace", "--json")
    user_id = broker_server.last_json(created)["user"]
    broker_server.escrow("admin", "role", "grant", "ada@acme.example", "reviewer",
                         "--org", "acme-ai")
    broker_server.escrow("admin", "role", "grant", user_id, "auditor")
    listed = broker_server.last_json(broker_server.escrow("admin", "user", "list", "--json"))
    assert listed["users"][0]["roles"] == ["reviewer@acme-ai", "auditor"]
    link = broker_server.last_json(
        broker_server.escrow("admin", "login-link", "ada@acme.example", "--json"))
    assert link["url"].startswith(broker_server.url + "/auth/link/ell_")
    assert link["expires_in"] == 600


def test_an_org_role_without_org_is_refused_with_a_hint(broker_server):
    broker_server.escrow("admin", "user", "create", "--email", "bob@uni.example")
    result = broker_server.escrow("admin", "role", "grant", "bob@uni.example", "reviewer",
                                  check=False)
    assert result.returncode == 1
    assert "needs --org" in result.stderr


def test_the_token_alone_goes_to_stdout_so_it_can_be_redirected_to_a_token_file(broker_server):
    result = broker_server.escrow("admin", "token", "create", "--org", "acme-ai", "--role",
                                  "depositor")
    assert result.stdout.strip().startswith("esk_")
    assert len(result.stdout.strip().splitlines()) == 1
    assert "shown only this once" in result.stderr


def test_a_user_made_twice_is_a_conflict_that_names_the_list_command(broker_server):
    broker_server.escrow("admin", "user", "create", "--email", "eve@uni.example")
    again = broker_server.escrow("admin", "user", "create", "--email", "eve@uni.example",
                                 check=False)
    assert again.returncode == 1
    assert "already exists" in again.stderr and "escrow admin user list" in again.stderr
    listed = broker_server.last_json(broker_server.escrow("admin", "user", "list", "--json"))
    assert [u["email"] for u in listed["users"]].count("eve@uni.example") == 1
