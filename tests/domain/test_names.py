import pytest

from broker.domain.names import check_file_path, check_org_name, split_model_name
from broker.errors import InvalidInput


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "is empty"),
        ("../etc/passwd", "'..'"),
        ("a/../../b", "'..'"),
        ("/abs/path", "is absolute"),
        ("dir\\file", "backslash"),
        ("a//b", "empty"),
        ("a/./b", "'.'"),
        ("line\nbreak", "control character"),
        ("cafe\u0301", "NFC"),
    ],
)
def test_bad_file_paths_are_refused_with_the_reason(path, problem):
    with pytest.raises(InvalidInput) as error:
        check_file_path(path)
    assert problem in error.value.message
    assert error.value.hint


@pytest.mark.parametrize("path", ["model.safetensors", "a/b/c.json", "weird name (1).bin"])
def test_good_file_paths_pass(path):
    assert check_file_path(path) == path


def test_model_names_are_org_slash_name():
    assert split_model_name("acme-ai/gpt-small") == ("acme-ai", "gpt-small")
    for bad in ["gpt-small", "Acme/x", "acme/", "a/b/c"]:
        with pytest.raises(InvalidInput):
            split_model_name(bad)


def test_org_names_are_lowercase_slugs():
    assert check_org_name("acme-ai") == "acme-ai"
    with pytest.raises(InvalidInput, match="not valid"):
        check_org_name("Acme AI")
