"""INSi wire rules, answer reading, the in-memory twin, the test PKI and the simulated table (no network)."""

from __future__ import annotations

import dataclasses
import re
import stat
from datetime import date
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

from ins.errors import InsiError, InsiFault, InsiProtocolError, InsiUnavailable, TraitError
from ins.insi import (
    DEFAULT_IDENTITIES,
    OPERATION_TRAITS,
    InsiResult,
    MemoryInsiClient,
    TraitsQuery,
    VitaleQuery,
    make_pki,
    simulated,
    wire_name,
)
from ins.insi.result import fault_envelope, result_envelope
from ins.insi.soap import read_answer
from ins.insi.table import Answer, answer_traits
from ins.insi.wire import (
    NAME_PATTERN,
    TraitsFields,
    VitaleFields,
    XmlRefused,
    parse_xml,
    traits_problem,
    vitale_problem,
)
from ins.nir import control_key, is_valid

MID = "urn:uuid:00000000-0000-4000-8000-000000000000"
NAME = re.compile(NAME_PATTERN)


# --- names on the wire -----------------------------------------------------------------------------------------
@given(st.text())
def test_wire_name_is_idempotent_and_matches_the_pattern(value: str) -> None:
    name = wire_name(value)
    assert wire_name(name) == name
    assert name == "" or NAME.match(name)


@given(st.lists(st.from_regex(r"[A-Z]{1,8}", fullmatch=True), min_size=1, max_size=4),
       st.lists(st.sampled_from([" ", "-", "'"]), min_size=3, max_size=3))
def test_wire_name_keeps_a_wire_ready_name(words: list[str], separators: list[str]) -> None:
    name = words[0] + "".join(s + w for s, w in zip(separators, words[1:], strict=False))
    assert wire_name(name) == name


@pytest.mark.parametrize(("stored", "wire"), [
    ("Hélène", "HELENE"), ("  berthier ", "BERTHIER"), ("N’Guessan", "N'GUESSAN"), ("jean - pierre", "JEAN-PIERRE"),
    ("Œuvray", "OEUVRAY"), ("Kœnig", "KOENIG"), ("Strauß", "STRAUSS"), ("Ægir", "AEGIR"), ("d'Arc", "D'ARC"),
    ("'t Hooft", "T HOOFT"), ("Jean-", "JEAN"), ("MARIE  CLAIRE", "MARIE CLAIRE"), ("Ngô", "NGO"),
    ("O.Brien", "O BRIEN"), ("123", ""), ("", ""),
])
def test_wire_name_examples(stored: str, wire: str) -> None:
    assert wire_name(stored) == wire


def test_field_rules_name_the_element() -> None:
    good = TraitsFields("MARTIN", "JEAN", "M", "1935-01-15", "2A004")
    assert traits_problem(good) is None
    assert traits_problem(dataclasses.replace(good, date_naissance="1935-00-00")) is None  # lunar date
    assert traits_problem(dataclasses.replace(good, lieu_naissance="99352")) is None
    assert traits_problem(dataclasses.replace(good, nom="martin")) == (
        "NomNaissance", f"NomNaissance must match {NAME_PATTERN} (upper-case letters, space, hyphen, apostrophe)")
    assert (traits_problem(dataclasses.replace(good, date_naissance="1935-13-01")) or ("",))[0] == "DateNaissance"
    assert (traits_problem(dataclasses.replace(good, lieu_naissance="2C004")) or ("",))[0] == "LieuNaissance"


def test_client_side_refusals_are_trait_errors_naming_the_query_field() -> None:
    memory = MemoryInsiClient()
    cases: list[tuple[TraitsQuery | VitaleQuery, str]] = [
        (TraitsQuery("", "JEAN", "M", date(1935, 1, 15)), "birth_family"),
        (TraitsQuery("MARTIN", "!", "M", date(1935, 1, 15)), "given"),
        (TraitsQuery("MARTIN", "JEAN", "U", date(1935, 1, 15)), "sex"),
        (TraitsQuery("MARTIN", "JEAN", "M", date(1935, 1, 15), "Paris"), "birth_place"),
        (VitaleQuery("1234", "135017511512325", "MARTIN", "1935-01-15", 1), "nir_individu"),
        (VitaleQuery("", "", "MARTIN", "1935-01-15", 1), "nir_od"),
        (VitaleQuery("", "135017511512325", "MARTIN", "15/01/1935", 1), "birth_date"),
        (VitaleQuery("", "135017511512325", "MARTIN", "1935-01-15", 10), "birth_rank"),
    ]
    for query, field in cases:
        with pytest.raises(TraitError) as caught:
            if isinstance(query, TraitsQuery):
                memory.search_by_traits(query)
            else:
                memory.search_by_vitale(query)
        assert caught.value.field == field
        assert "MARTIN" not in str(caught.value) and "135017511512325" not in str(caught.value)
    card = VitaleFields("135017511512325", "135017511512325", "MARTIN", "1935-01-15", "1")
    assert vitale_problem(card) is None
    assert vitale_problem(dataclasses.replace(card, matricule_individu="")) is None
    assert vitale_problem(dataclasses.replace(card, matricule_individu="1350175115123")) is None
    assert vitale_problem(dataclasses.replace(card, matricule_od="135017511512326")) == (
        "MatriculeOD", "MatriculeOD is not a NIR/NIA with a valid key")


# --- hardened parsing ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("payload", [
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>',
    b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "file:///etc/passwd"><x/>',
    b'<!doctype x><x/>',
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><x>&lol2;</x>',
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x><x/>'.encode("utf-16"),
    b"<x>&e;</x>",
    b"<x><y></x>",
    b"",
])
def test_hardened_parser_refuses(payload: bytes) -> None:
    with pytest.raises(XmlRefused):
        parse_xml(payload)


def test_hardened_parser_reads_plain_xml() -> None:
    assert parse_xml(b'<?xml version="1.0" encoding="UTF-8"?><x a="1"><!-- c --><y>z</y></x>').findtext("y") == "z"


# --- reading answers -------------------------------------------------------------------------------------------
def _found(label: str = "born-abroad-nia-to-nir") -> bytes:
    return result_envelope(OPERATION_TRAITS, MID, Answer("00", simulated(label)))


def _read(data: bytes, status: int = 200, *, header: bool = False, allow: bool = True) -> InsiResult:
    return read_answer(status, header, data, MID, allow_simulator=allow)


def test_reads_a_found_identity_with_its_history() -> None:
    entry = simulated("born-abroad-nia-to-nir")
    assert _read(_found()) == InsiResult("00", entry.identity, simulated=True)


def test_reads_an_answer_that_is_not_from_a_simulator() -> None:
    data = re.sub(rb"<sim:Simulateur>true</sim:Simulateur>", b"", _found("corsica"))
    result = _read(data.replace(b"1.2.250.1.213.1.4.10", b"urn:oid:1.2.250.1.213.1.4.8"))
    assert not result.simulated and result.identity is not None and result.identity.oid == "1.2.250.1.213.1.4.8"


@pytest.mark.parametrize(("status", "data", "error", "message"), [
    (200, b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "x">]><x>&e;</x>', InsiProtocolError, "refused"),
    (200, b"<html>maintenance</html>", InsiProtocolError, "not a SOAP 1.2 envelope"),
    (503, b"<html>maintenance</html>", InsiUnavailable, "HTTP 503"),
    (502, b"", InsiUnavailable, "HTTP 502"),
    (404, result_envelope(OPERATION_TRAITS, MID, Answer("01", None)), InsiProtocolError, "HTTP 404"),
    (200, result_envelope(OPERATION_TRAITS, MID, Answer("01", None)).replace(b">01<", b">99<"),
     InsiProtocolError, "unexpected CR code 99"),
    (200, result_envelope(OPERATION_TRAITS, MID, Answer("01", None)).replace(MID.encode(), b"urn:uuid:other"),
     InsiProtocolError, "wsa:RelatesTo"),
    (200, _found().replace(b"<Cle>73</Cle>", b"<Cle>74</Cle>"), InsiProtocolError, "valid key"),
    (200, _found().replace(b">1.2.250.1.213.1.4.10</OID></INSACTIF>", b">1.2.3</OID></INSACTIF>"),
     InsiProtocolError, "INS OIDs"),
    (200, _found().replace(b">1947-06-21<", b">1947-06-00<"), InsiProtocolError, "not a calendar date"),
    (200, _found().replace(b">HADDAD<", b">haddad<"), InsiProtocolError, "does not match"),
    (200, _found().replace(b"<Sexe>F</Sexe>", b""), InsiProtocolError, "no Sexe"),
    (200, _found().replace(b"RESULTAT", b"RESULTATS"), InsiProtocolError, "no RESULTAT"),
    (500, fault_envelope("Receiver", "panne", "siram_40", "insi_102", "detail"), InsiFault, "Receiver/siram_40"),
    (400, fault_envelope("Sender", "Sexe must be M or F"), InsiFault, "[Sender]: Sexe must be M or F"),
    (200, b"x" * (2 << 20), InsiProtocolError, "larger than"),
])
def test_unexpected_answers(status: int, data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as caught:
        _read(data, status)
    assert message in str(caught.value)
    assert "HADDAD" not in str(caught.value).upper() and "2470699352" not in str(caught.value)


def test_simulator_is_refused_by_header_or_by_soap_marker() -> None:
    for header, data in ((True, b"<html/>"), (False, _found())):
        with pytest.raises(InsiError, match="simulator; production refuses it"):
            _read(data, header=header, allow=False)


# --- the twin --------------------------------------------------------------------------------------------------
def test_memory_client_records_calls_and_fails_on_demand() -> None:
    memory = MemoryInsiClient()
    query = TraitsQuery("Santoni", "Paul", "M", date(1941, 11, 3))
    assert memory.search_by_traits(query) == InsiResult("00", simulated("corsica").identity, simulated=True)
    memory.fail_with = InsiUnavailable("INSi did not answer within 10 s")
    for _ in range(2):
        with pytest.raises(InsiUnavailable):
            memory.search_by_traits(query)
    memory.fail_with = None
    assert memory.search_by_traits(query).code == "00"
    assert memory.calls == [query] * 4


def test_memory_client_takes_its_own_table() -> None:
    memory = MemoryInsiClient([simulated("corsica")])
    assert memory.search_by_traits(TraitsQuery("MARTIN", "JEAN", "M", date(1935, 1, 15))).code == "01"


# --- the simulated table ---------------------------------------------------------------------------------------
def test_table_identities_are_consistent() -> None:
    labels = [e.label for e in DEFAULT_IDENTITIES]
    assert len(set(labels)) == len(labels) >= 8
    for entry in DEFAULT_IDENTITIES:
        i = entry.identity
        assert is_valid(i.matricule) and i.matricule[13:] == control_key(i.matricule[:13])
        assert i.oid == "1.2.250.1.213.1.4.10"
        assert i.matricule[0] == {"M": "1", "F": "2"}[i.sex]
        assert i.matricule[1:5] == i.birth_date.strftime("%y%m")
        assert i.matricule[5:10] == i.birth_place
        assert all(NAME.match(n) for n in (i.birth_family, *i.given_names))
        assert all(is_valid(m) and oid == i.oid for m, oid in i.previous)
    nia = [e for e in DEFAULT_IDENTITIES if e.kind == "NIA"]
    assert len(nia) == 1 and nia[0].identity.previous and nia[0].identity.birth_place.startswith("99")
    assert any(len(e.identity.given_names) == 3 and e.identity.birth_place == "69123" for e in DEFAULT_IDENTITIES)
    assert any(e.identity.birth_place == "2A004" and e.identity.sex == "M" for e in DEFAULT_IDENTITIES)
    assert any("'" in e.identity.birth_family and any("-" in g for g in e.identity.given_names)
               for e in DEFAULT_IDENTITIES)
    assert {e.behaviour for e in DEFAULT_IDENTITIES} == {"normal", "fault", "slow"}
    paris = simulated("homonym-paris")
    fields = TraitsFields(paris.identity.birth_family, "JEAN", "M", "1935-01-15", None)
    assert answer_traits(DEFAULT_IDENTITIES, fields).code == "02"
    with pytest.raises(KeyError):
        simulated("nobody")


# --- the test PKI ----------------------------------------------------------------------------------------------
def test_pki_is_idempotent_and_says_what_it_is(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    files = {f.name: getattr(pki, f.name).read_bytes() for f in dataclasses.fields(pki)}
    again = make_pki(tmp_path / "pki")
    assert again == pki
    assert files == {f.name: getattr(again, f.name).read_bytes() for f in dataclasses.fields(again)}
    assert stat.S_IMODE(pki.client_key.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    other = x509.load_pem_x509_certificate(pki.other_ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    client = x509.load_pem_x509_certificate(pki.client_cert.read_bytes())
    rogue = x509.load_pem_x509_certificate(pki.untrusted_client_cert.read_bytes())
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "EHPAD DEMO - INSI-AUTO (simulateur)"
    assert client.issuer == ca.subject and server.issuer == ca.subject and rogue.issuer == other.subject
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    pki.server_cert.unlink()
    assert make_pki(tmp_path / "pki").server_cert.is_file()
    assert pki.ca_cert.read_bytes() != files["ca_cert"]  # an incomplete PKI is made again, whole
