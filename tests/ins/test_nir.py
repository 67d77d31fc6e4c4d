"""NIR control key (97 - N mod 97, Corsica 2A -> 19, 2B -> 18)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ins import InsKind, control_key, ins_kind, is_valid


@pytest.mark.parametrize("nir", ["185057512345673", "285031512345659", "285032A12345648", "285032B12345675",
                                 "185059912345607", "279035121518989", "180017505600103"])
def test_known_valid(nir: str) -> None:
    assert is_valid(nir)


@pytest.mark.parametrize("nir", ["185057512345674", "18505751234567", "1850575123456733", "385057512345673",
                                 "185007512345673", "285032C12345648", "147720425367411"])
def test_known_invalid(nir: str) -> None:
    assert not is_valid(nir)


nirs = st.builds(
    lambda sex, year, month, dept, rest: f"{sex}{year:02d}{month:02d}{dept}{rest:06d}",
    st.sampled_from("12"), st.integers(0, 99), st.integers(1, 12),
    st.sampled_from(["75", "69", "2A", "2B", "99", "01"]), st.integers(0, 999_999),
)


@given(nirs)
def test_computed_key_validates_and_any_other_key_does_not(first13: str) -> None:
    key = control_key(first13)
    assert is_valid(first13 + key)
    wrong = f"{(int(key) + 1) % 100:02d}"
    assert not is_valid(first13 + wrong)


def test_ins_kind_needs_the_type_for_the_nir_oid() -> None:
    fr = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
    assert ins_kind(InsKind.NIR.system, [(fr, "INS-NIR")]) is InsKind.NIR
    assert ins_kind(InsKind.NIR.system, []) is None  # could be an NSS
    assert ins_kind(InsKind.NIA.system, []) is InsKind.NIA
    assert ins_kind("urn:oid:1.2.3", [(fr, "INS-NIR")]) is None
