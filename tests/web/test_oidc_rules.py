"""The rules of web login that need no server: which claims are trusted, where `next` may go,
which providers the configuration accepts, and how `auth_time` meets `max_age`."""

from __future__ import annotations

import time

import pytest

from broker.adapters.oidc import OidcProviders, PendingLogin, _auth_time, trusted_claims
from broker.config import OidcIssuer, load_settings
from broker.errors import ConfigError, Unauthorized
from broker.web.auth import safe_next

UNI = OidcIssuer(
    name="uni",
    issuer="https://idp.uni.example",
    client_id="broker",
    client_secret="secret",
    email_domains=("uni.example",),
    affiliation_scopes=("uni.example", "med.uni.example"),
)


# --- trusted claims ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "verified", "trusted"),
    [
        ("ada@uni.example", True, True),
        ("Ada@UNI.Example", True, True),
        ("ada@uni.example", "true", True),  # some providers send a string
        ("ada@uni.example", False, False),
        ("ada@uni.example", None, False),
        ("ada@uni.example", "yes", False),
        ("ada@cs.uni.example", True, False),  # subdomains are other domains
        ("ada@uni.example.evil.example", True, False),
        ("ada@elsewhere.example", True, False),
        ("not-an-email", True, False),
    ],
)
def test_an_email_is_verified_only_if_the_provider_says_so_within_its_domains(
    email, verified, trusted
):
    claims = {"email": email, "email_verified": verified}
    result = trusted_claims(UNI, claims)
    assert result.email == email  # kept either way
    assert result.email_verified is trusted


@pytest.mark.parametrize(
    ("values", "trusted"),
    [
        (["member@uni.example", "staff@other.example"], ("member@uni.example",)),
        ("member@uni.example faculty@MED.uni.example", ("faculty@med.uni.example",
                                                        "member@uni.example")),
        (["Member@Uni.Example"], ("member@uni.example",)),
        (["member@cs.uni.example"], ()),
        (["member", "@uni.example", "member@", 7, None], ()),
        ({"member": "uni.example"}, ()),
        (None, ()),
    ],
)
def test_an_affiliation_counts_only_within_the_providers_scopes(values, trusted):
    assert trusted_claims(UNI, {"eduperson_scoped_affiliation": values}).affiliations == trusted


def test_a_provider_with_no_domains_vouches_for_nothing():
    bare = OidcIssuer(name="bare", issuer="https://idp.example", client_id="c", client_secret="s")
    result = trusted_claims(bare, {"email": "a@idp.example", "email_verified": True,
                                   "eduperson_scoped_affiliation": ["member@idp.example"]})
    assert (result.email_verified, result.affiliations) == (False, ())


def test_the_name_falls_back_to_given_and_family_names():
    assert trusted_claims(UNI, {"given_name": "Ada", "family_name": "Lovelace"}).name == (
        "Ada Lovelace")
    assert trusted_claims(UNI, {}).name is None


# --- next ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [None, "", "https://evil.example/", "//evil.example/x", "/\\evil.example", "\\\\evil.example",
     "javascript:alert(1)", "http:/evil.example", "/\t/evil.example", "/\n/evil.example",
     "evil.example", "me", 42],
)
def test_next_never_leaves_the_site(target):
    assert safe_next(target) == "/me"


@pytest.mark.parametrize("target", ["/", "/device?user_code=ABCD-EFGH", "/api/v1/me", "/a//b"])
def test_next_keeps_local_paths(target):
    assert safe_next(target) == target


# --- configuration --------------------------------------------------------------------------


def settings(tmp_path, **env):
    return load_settings({"ESCROW_DATA_DIR": str(tmp_path), **env})


ONE = {
    "ESCROW_OIDC_NAME": "uni",
    "ESCROW_OIDC_ISSUER": "https://idp.uni.example",
    "ESCROW_OIDC_CLIENT_ID": "broker",
    "ESCROW_OIDC_CLIENT_SECRET": "s3cret",
}


def test_one_provider_comes_from_the_environment(tmp_path):
    configured = settings(tmp_path, **ONE, ESCROW_OIDC_AFFILIATION_SCOPES="uni.example",
                          ESCROW_OIDC_EMAIL_DOMAINS="Uni.Example, @med.uni.example").oidc_issuers
    assert configured == (OidcIssuer(
        name="uni", issuer="https://idp.uni.example", client_id="broker", client_secret="s3cret",
        email_domains=("med.uni.example", "uni.example"), affiliation_scopes=("uni.example",),
        scopes="openid email profile eduperson_scoped_affiliation"),)
    assert "s3cret" not in repr(configured)
    assert settings(tmp_path).oidc_issuers == ()


@pytest.mark.parametrize(
    "issuer",
    ["http://idp.uni.example", "http://10.0.0.1:8080", "ftp://idp.uni.example",
     "https://idp.uni.example?x=1", "https://user:pw@idp.uni.example", "idp.uni.example"],
)
def test_an_issuer_that_is_not_https_is_refused_at_configuration(tmp_path, issuer):
    with pytest.raises(ConfigError, match="is not an https URL"):
        settings(tmp_path, **{**ONE, "ESCROW_OIDC_ISSUER": issuer})


@pytest.mark.parametrize(
    "issuer", ["http://127.0.0.1:9000", "http://localhost:9000/realms/x", "http://[::1]:9000"]
)
def test_plain_http_is_allowed_to_loopback(tmp_path, issuer):
    assert settings(tmp_path, **{**ONE, "ESCROW_OIDC_ISSUER": issuer}).oidc_issuers[0].issuer == (
        issuer)


def test_a_provider_built_by_hand_is_checked_too():
    with pytest.raises(ConfigError, match="is not an https URL"):
        OidcProviders((OidcIssuer(name="x", issuer="http://idp.example", client_id="c",
                                  client_secret="s"),))


def test_several_providers_come_from_the_config_file(tmp_path):
    config = tmp_path / "escrow.yaml"
    config.write_text(
        "oidc:\n"
        "  - {name: uni, issuer: 'https://idp.uni.example', client_id: a, client_secret: b,\n"
        "     email_domains: [uni.example], affiliation_scopes: [uni.example]}\n"
        "  - {name: lab, issuer: 'https://login.lab.example', client_id: c, client_secret: d,\n"
        "     scopes: [openid, email]}\n"
    )
    configured = settings(tmp_path, ESCROW_CONFIG_FILE=str(config)).oidc_issuers
    assert [(i.name, i.email_domains, i.scopes) for i in configured] == [
        ("uni", ("uni.example",), "openid email profile eduperson_scoped_affiliation"),
        ("lab", (), "openid email"),
    ]


def test_the_affiliation_scope_is_requested_where_affiliations_count(tmp_path):
    # issue 15: providers release eduperson_scoped_affiliation under its own scope only
    provider = {"ESCROW_OIDC_ISSUER": "https://idp.uni.example", "ESCROW_OIDC_CLIENT_ID": "a",
                "ESCROW_OIDC_CLIENT_SECRET": "b"}
    (plain,) = settings(tmp_path, **provider).oidc_issuers
    assert plain.scopes == "openid email profile"
    (affiliations,) = settings(tmp_path, **provider,
                               ESCROW_OIDC_AFFILIATION_SCOPES="uni.example").oidc_issuers
    assert affiliations.scopes == "openid email profile eduperson_scoped_affiliation"
    (chosen,) = settings(tmp_path, **provider, ESCROW_OIDC_AFFILIATION_SCOPES="uni.example",
                         ESCROW_OIDC_SCOPES="openid email affiliation").oidc_issuers
    assert chosen.scopes == "openid email affiliation"


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ("{name: uni, issuer: 'https://a.example', client_id: a, client_secret: b, "
         "email_domain: [uni.example]}", "email_domain"),
        ("{name: uni, issuer: 'https://a.example', client_id: a}", "client_secret"),
        ("{name: Uni Login, issuer: 'https://a.example', client_id: a, client_secret: b}",
         "not a short lowercase word"),
        ("{name: uni, issuer: 'https://a.example', client_id: a, client_secret: b, "
         "email_domains: uni.example}", "must be a list"),
        ("{name: uni, issuer: 'https://a.example', client_id: a, client_secret: b, "
         "scopes: email}", "lack 'openid'"),
        ("{name: uni, issuer: 'http://a.example', client_id: a, client_secret: b}",
         "is not an https URL"),
    ],
)
def test_a_bad_provider_entry_is_refused_with_what_is_wrong(tmp_path, entry, complaint):
    config = tmp_path / "escrow.yaml"
    config.write_text(f"oidc:\n  - {entry}\n")
    with pytest.raises(ConfigError, match=complaint):
        settings(tmp_path, ESCROW_CONFIG_FILE=str(config))


def test_the_same_provider_name_twice_is_refused(tmp_path):
    config = tmp_path / "escrow.yaml"
    config.write_text("oidc:\n  - {name: uni, issuer: 'https://b.example', client_id: a, "
                      "client_secret: b}\n")
    with pytest.raises(ConfigError, match="the same name is configured twice"):
        settings(tmp_path, **ONE, ESCROW_CONFIG_FILE=str(config))


# --- auth_time and max_age --------------------------------------------------------------------


def pending(max_age: int | None) -> PendingLogin:
    return PendingLogin("uni", UNI.issuer, "state", "nonce", "verifier", "https://b/cb",
                        max_age, time.time())


def test_max_age_needs_an_auth_time():
    with pytest.raises(Unauthorized, match="no auth_time"):
        _auth_time(UNI, pending(300), {})


def test_a_login_older_than_max_age_is_refused():
    with pytest.raises(Unauthorized, match="did not re-authenticate"):
        _auth_time(UNI, pending(300), {"auth_time": int(time.time()) - 3600})


def test_an_auth_time_in_the_future_is_refused():
    with pytest.raises(Unauthorized, match="in the future"):
        _auth_time(UNI, pending(None), {"auth_time": int(time.time()) + 3600})


def test_a_recent_auth_time_is_kept():
    now = int(time.time())
    assert _auth_time(UNI, pending(300), {"auth_time": now - 10}).timestamp() == now - 10
    assert _auth_time(UNI, pending(None), {}) is None
