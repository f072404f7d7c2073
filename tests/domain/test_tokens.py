from broker.domain.secrets import new_secret, prefix_of, secret_matches, split_secret


def test_a_new_token_splits_into_its_id_and_a_secret_matching_the_stored_hash():
    issued = new_secret("esk")
    token_id, secret = split_secret(issued.plaintext, "esk")
    assert token_id == issued.id
    assert secret_matches(secret, issued.secret_sha256)
    assert issued.plaintext not in repr(issued.secret_sha256)


def test_a_changed_secret_does_not_match():
    issued = new_secret("esk")
    token_id, secret = split_secret(issued.plaintext, "esk")
    tampered = ("A" if secret[0] != "A" else "B") + secret[1:]
    assert not secret_matches(tampered, issued.secret_sha256)


def test_text_not_shaped_like_a_token_is_refused():
    for text in ["", "esk_", "Bearer x", "esk_zz_" + "a" * 43, new_secret("esk").plaintext + "x"]:
        assert split_secret(text, "esk") is None


def test_a_secret_of_another_kind_is_not_accepted_as_this_kind():
    user_token = new_secret("eat").plaintext
    assert prefix_of(user_token) == "eat"
    assert split_secret(user_token, "esk") is None
