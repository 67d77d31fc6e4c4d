"""String normalisation for search (docs/fhir-api.md, "Search")."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dui.fhir.search.normalize import normalize


@pytest.mark.parametrize(("written", "typed"), [
    ("Hélène", "helene"), ("LEFÈVRE", "lefevre"), ("N'Guessan", "nguessan"), ("N’GUESSAN", "n guessan"),
    ("Jean-Pierre", "jean pierre"), ("Œuvray", "oeuvray"), ("Lætitia", "laetitia"), ("Gaëlle", "gaelle"),
    ("François", "francois"), ("Ben Saïd", "bensaid"), ("Da Silva", "da-silva"),
    ("Ǿrsted", "orsted"), ("ǿ", "o"), ("Ǽ", "ae"),  # letters spelled out, carrying an accent
])
def test_staff_spellings_match(written: str, typed: str) -> None:
    assert normalize(written) == normalize(typed)


@given(st.text())
def test_nfc_and_nfd_forms_are_equal(text: str) -> None:
    assert normalize(unicodedata.normalize("NFC", text)) == normalize(unicodedata.normalize("NFD", text))


@given(st.text())
def test_idempotent_and_only_letters_and_digits(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert all(ch.isalnum() for ch in once)
