from broker.domain.tokens import new_token, secret_matches, split_token


def test_a_new_token_splits_into_its_id_and_a_secret_matching_the_stored_hash():
    issued = new_token()
    token_id, secret = split_token(issued.plaintext)
    assert token_id == issued.id
    assert secret_matches(secret, issued.secret_sha256)
    assert issued.plaintext not in repr(issued.secret_sha256)


def test_a_changed_secret_does_not_match():
    issued = new_token()
    token_id, secret = split_token(issued.plaintext)
    tampered = ("A" if secret[0] != "A" else "B") + secret[1:]
    assert not secret_matches(tampered, issued.secret_sha256)


def test_text_not_shaped_like_a_token_is_refused():
    for text in ["", "esk_", "Bearer x", "esk_zz_" + "a" * 43, new_token().plaintext + "x"]:
        assert split_token(text) is None
