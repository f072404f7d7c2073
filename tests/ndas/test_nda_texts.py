"""NDA texts as files: strict front matter, identity = SHA-256 of the raw bytes. Pure."""

import hashlib
from pathlib import Path

import pytest

from broker.domain.nda import NdaTextError, library_of, load_library, parse_nda, version_key
from broker.errors import NotFound

REPO_NDAS = Path(__file__).resolve().parents[2] / "policies" / "ndas"
GOOD = b"---\nid: acme-research-nda\nversion: 1\ntitle: Research access\norganisation: acme-ai\n"


def test_the_shipped_acme_nda_loads_and_is_identified_by_its_bytes():
    library = load_library(REPO_NDAS)
    text = library.get("acme-research-nda")
    raw = (REPO_NDAS / "acme-research-nda-v1.md").read_bytes()
    assert (text.id, text.version, text.organisation) == ("acme-research-nda", "1", "acme-ai")
    assert text.raw == raw
    assert text.sha256 == hashlib.sha256(raw).hexdigest()
    assert "## 3. Confidentiality and security" in text.body
    assert not text.body.startswith("---")


def test_quoted_values_and_colons_in_the_title_are_fine():
    text = parse_nda(b'---\nid: "x"\nversion: \'2.1\'\ntitle: Acme: research terms\n'
                     b"organisation: acme-ai\n---\nText.\n", Path("x.md"))
    assert (text.id, text.version, text.title) == ("x", "2.1", "Acme: research terms")


@pytest.mark.parametrize("raw, line, expected", [
    (b"id: x\n", 1, "does not start with a '---'"),
    (GOOD + b"no closing line\n", None, "no closing '---'"),
    (GOOD.replace(b"title", b"tilte") + b"---\nText\n", 4, "unknown front matter key 'tilte'"),
    (GOOD + b"id: again\n---\nText\n", 6, "'id' appears twice"),
    (GOOD.replace(b"version: 1\n", b"") + b"---\nText\n", 1, "lacks version"),
    (GOOD.replace(b"version: 1", b"version:") + b"---\nText\n", 3, "'version' is empty"),
    (GOOD.replace(b"id: acme-research-nda", b"id: Acme NDA") + b"---\nText\n", 2,
     "id 'Acme NDA' is not valid"),
    (GOOD.replace(b"organisation: acme-ai", b"organisation: Acme AI") + b"---\nText\n", 5,
     "organisation"),
    (GOOD + b"  nested: yaml\n---\nText\n", 6, "expected 'key: value'"),
    (GOOD.replace(b"title: Research access", b'title: "open') + b"---\nText\n", 4,
     "unbalanced quotes"),
    (GOOD + b"---\n\n  \n", 7, "no text after the front matter"),
    (GOOD + b"---\nText\r\nmore\n", 7, "carriage return"),
    (b"\xef\xbb\xbf" + GOOD + b"---\nText\n", 1, "byte order mark"),
    (GOOD + b"---\nText \xff\n", 7, "not valid UTF-8"),
])
def test_a_malformed_text_is_refused_naming_file_and_line(raw, line, expected):
    with pytest.raises(NdaTextError) as refused:
        parse_nda(raw, Path("policies/ndas/bad.md"))
    assert expected in refused.value.message
    where = f"policies/ndas/bad.md:{line}:" if line else "policies/ndas/bad.md:"
    assert where in refused.value.message


def test_two_files_with_the_same_id_and_version_are_refused():
    raw = GOOD + b"---\nText\n"
    with pytest.raises(NdaTextError, match="also in a.md"):
        library_of([(Path("a.md"), raw), (Path("b.md"), raw + b"changed\n")])


def test_the_versions_of_one_nda_may_not_change_organisation():
    other = GOOD.replace(b"version: 1", b"version: 2").replace(b"acme-ai", b"other-lab")
    with pytest.raises(NdaTextError, match="belongs to 'acme-ai'"):
        library_of([(Path("a.md"), GOOD + b"---\nA\n"), (Path("b.md"), other + b"---\nB\n")])


def test_the_latest_version_is_the_highest_in_natural_order():
    files = [(Path(f"{v}.md"), GOOD.replace(b"version: 1", f"version: {v}".encode())
              + b"---\nText\n") for v in ("2", "10", "1.9")]
    library = library_of(files)
    assert [t.version for t in library.versions("acme-research-nda")] == ["1.9", "2", "10"]
    assert library.get("acme-research-nda").version == "10"
    assert library.get("acme-research-nda", "2").version == "2"
    assert version_key("2024-05") < version_key("2024-11")


def test_an_unknown_id_or_version_is_not_found():
    library = library_of([(Path("a.md"), GOOD + b"---\nText\n")])
    with pytest.raises(NotFound, match="'other' does not exist"):
        library.get("other")
    with pytest.raises(NotFound, match="no version '7'; it has 1"):
        library.get("acme-research-nda", "7")


def test_a_missing_directory_has_no_texts(tmp_path):
    assert load_library(tmp_path / "nothing").ids() == []
