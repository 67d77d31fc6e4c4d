"""INSi client against the local simulator, over real mutual TLS on 127.0.0.1 (ins.insi; DOMAIN.md §1.6)."""

from __future__ import annotations

import dataclasses
import http.client
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from lxml import etree

from ins.errors import InsError, InsiError, InsiFault, InsiUnavailable, TraitError
from ins.insi import (
    DEFAULT_IDENTITIES,
    OPERATION_TRAITS,
    OPERATION_VITALE,
    InsiResult,
    InsiSimulator,
    MemoryInsiClient,
    Pki,
    SimulatedIdentity,
    SoapInsiClient,
    TraitsQuery,
    VitaleQuery,
    make_pki,
    simulated,
)
from ins.insi.result import read_fault
from ins.insi.wire import NS_LPS, NS_SOAP, NS_WSA, parse_xml, q

TIMEOUT = 5.0  # generous for loaded machines; the timeout test uses SHORT
SHORT = 0.5


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("insi-pki"))


@pytest.fixture(scope="session")
def simulator(pki: Pki) -> Iterator[InsiSimulator]:
    with InsiSimulator(pki=pki, slow_seconds=2.0) as sim:
        yield sim


def soap_client(sim: InsiSimulator, pki: Pki, **options: object) -> SoapInsiClient:
    settings: dict[str, object] = {"timeout": TIMEOUT, **options}
    cert = str(settings.pop("cert", pki.client_cert))
    key = str(settings.pop("key", pki.client_key))
    ca = str(settings.pop("ca", pki.ca_cert))
    return SoapInsiClient(sim.url, cert, key, ca, **settings)  # type: ignore[arg-type]


@pytest.fixture
def client(simulator: InsiSimulator, pki: Pki) -> SoapInsiClient:
    return soap_client(simulator, pki)


def by_traits(entry: SimulatedIdentity, *, given: int = 0, place: bool = False) -> TraitsQuery:
    i = entry.identity
    return TraitsQuery(i.birth_family, i.given_names[given], i.sex, i.birth_date, i.birth_place if place else None)


def by_vitale(entry: SimulatedIdentity) -> VitaleQuery:
    i = entry.identity
    if entry.od_matricule:
        return VitaleQuery("", entry.od_matricule, i.birth_family, i.birth_date.isoformat(), entry.birth_rank)
    return VitaleQuery(i.matricule, i.matricule, i.birth_family, i.birth_date.isoformat(), entry.birth_rank)


# --- 00 / 01 / 02 -----------------------------------------------------------------------------------------------
def test_traits_one_identity_found(client: SoapInsiClient) -> None:
    lyon = simulated("lyon-three-given-names")
    result = client.search_by_traits(by_traits(lyon, given=2, place=True))
    assert result == InsiResult("00", lyon.identity, simulated=True)
    assert result.identity is not None and result.identity.given_names == ("MARIE", "HELENE", "JEANNE")


def test_traits_none_found(client: SoapInsiClient) -> None:
    query = dataclasses.replace(by_traits(simulated("corsica")), birth_date=date(1941, 11, 4))
    assert client.search_by_traits(query) == InsiResult("01", None, simulated=True)


def test_traits_homonyms_give_02_without_place_and_00_with_it(client: SoapInsiClient) -> None:
    paris, bordeaux = simulated("homonym-paris"), simulated("homonym-bordeaux")
    assert paris.identity.birth_family == bordeaux.identity.birth_family
    assert client.search_by_traits(by_traits(paris)) == InsiResult("02", None, simulated=True)
    assert client.search_by_traits(by_traits(bordeaux, place=True)).identity == bordeaux.identity
    assert client.search_by_traits(by_traits(bordeaux, given=1)).identity == bordeaux.identity


def test_accents_lower_case_and_typographic_apostrophe_still_match(client: SoapInsiClient) -> None:
    lyon, ivorian = simulated("lyon-three-given-names"), simulated("apostrophe-hyphen")
    found = client.search_by_traits(TraitsQuery("  berthier ", "Hélène", "f", date(1938, 4, 12), "69123"))
    assert found.identity == lyon.identity
    found = client.search_by_traits(TraitsQuery("N’Guessan", "jean - pierre", "M", date(1950, 8, 30)))
    assert found.identity == ivorian.identity


def test_corsica_birth_place(client: SoapInsiClient) -> None:
    corsica = simulated("corsica")
    result = client.search_by_traits(by_traits(corsica, place=True))
    assert result.identity is not None and result.identity.birth_place == "2A004"
    assert result.identity.matricule[5:7] == "2A"


def test_nia_to_nir_returns_the_previous_matricule(client: SoapInsiClient) -> None:
    entry = simulated("born-abroad-nia-to-nir")
    result = client.search_by_traits(by_traits(entry))
    assert result.identity is not None
    assert result.identity.previous == entry.identity.previous
    assert result.identity.oid == "1.2.250.1.213.1.4.10"
    assert result.identity.birth_place == "99352"


def test_vitale_found_by_matricule_13_or_15_characters(client: SoapInsiClient) -> None:
    lyon = simulated("lyon-three-given-names")
    assert client.search_by_vitale(by_vitale(lyon)).identity == lyon.identity
    short = dataclasses.replace(by_vitale(lyon), nir_individu=lyon.identity.matricule[:13])
    assert client.search_by_vitale(short).identity == lyon.identity


def test_vitale_ayant_droit_found_by_ouvrant_droit_and_rank(client: SoapInsiClient) -> None:
    child = simulated("ayant-droit")
    query = by_vitale(child)
    assert query.nir_individu == "" and query.nir_od == simulated("corsica").identity.matricule
    assert client.search_by_vitale(query).identity == child.identity
    assert client.search_by_vitale(dataclasses.replace(query, birth_rank=2)).code == "01"


def test_vitale_none_found(client: SoapInsiClient) -> None:
    query = dataclasses.replace(by_vitale(simulated("corsica")), birth_family="SANTINI")
    assert client.search_by_vitale(query) == InsiResult("01", None, simulated=True)


def test_vitale_several_found(pki: Pki) -> None:
    child = simulated("ayant-droit")
    twin = dataclasses.replace(child, label="twin", identity=dataclasses.replace(child.identity,
                                                                                 matricule="243052B03309919"))
    with InsiSimulator((child, twin), pki=pki) as sim:
        assert soap_client(sim, pki).search_by_vitale(by_vitale(child)) == InsiResult("02", None, simulated=True)


def test_the_envelope_carries_addressing_and_the_lps_context(client: SoapInsiClient,
                                                             simulator: InsiSimulator) -> None:
    client.search_by_vitale(by_vitale(simulated("corsica")))
    header = parse_xml(simulator.received[-1]).find(q(NS_SOAP, "Header"))
    assert header is not None
    assert header.findtext(q(NS_WSA, "Action")) == OPERATION_VITALE
    assert re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", header.findtext(q(NS_WSA, "MessageID")) or "")
    assert header.findtext(q(NS_WSA, "To")) == simulator.url
    idam = header.find(f"{q(NS_LPS, 'ContexteLPS')}/{q(NS_LPS, 'LPS')}/{q(NS_LPS, 'IDAM')}")
    assert idam is not None and idam.get("R") == "4"
    assert header.findtext(f".//{q(NS_LPS, 'Nom')}") == "urn:lps:dui-ehpad:0.1.0"


# --- failures ---------------------------------------------------------------------------------------------------
def test_receiver_fault_is_an_insi_fault(client: SoapInsiClient) -> None:
    with pytest.raises(InsiFault) as caught:
        client.search_by_traits(by_traits(simulated("service-fault")))
    assert caught.value.code == "Receiver/siram_40/insi_102"
    assert "temporairement inaccessible" in caught.value.reason


def test_closed_port_is_unavailable(pki: Pki) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = SoapInsiClient(f"https://127.0.0.1:{port}/insi", str(pki.client_cert), str(pki.client_key),
                            str(pki.ca_cert), timeout=SHORT)
    with pytest.raises(InsiUnavailable, match="refused the connection"):
        client.search_by_traits(by_traits(simulated("corsica")))


def test_timeout_is_unavailable(simulator: InsiSimulator, pki: Pki) -> None:
    client = soap_client(simulator, pki, timeout=SHORT)  # the simulator answers after 2 s
    with pytest.raises(InsiUnavailable, match=r"INSi did not answer within 0\.5 s"):
        client.search_by_traits(by_traits(simulated("slow-answer")))


@pytest.mark.parametrize("who", ["no certificate", "untrusted certificate"])
def test_client_certificate_refused(simulator: InsiSimulator, pki: Pki, who: str) -> None:
    if who == "no certificate":
        client = soap_client(simulator, pki, cert="", key="")
    else:
        client = soap_client(simulator, pki, cert=pki.untrusted_client_cert, key=pki.untrusted_client_key)
    with pytest.raises(InsiUnavailable, match="TLS"):
        client.search_by_traits(by_traits(simulated("corsica")))


def test_server_not_verified(simulator: InsiSimulator, pki: Pki) -> None:
    client = soap_client(simulator, pki, ca=pki.other_ca_cert)
    with pytest.raises(InsiUnavailable, match="TLS handshake with INSi failed: certificate verify failed"):
        client.search_by_traits(by_traits(simulated("corsica")))


def test_plain_http_and_missing_files_are_refused_at_construction(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(InsiError, match="https"):
        SoapInsiClient("http://127.0.0.1/insi", str(pki.client_cert), str(pki.client_key), str(pki.ca_cert))
    with pytest.raises(InsiError, match="cannot load"):
        SoapInsiClient("https://127.0.0.1/insi", str(tmp_path / "none.pem"), "", str(pki.ca_cert))


def test_production_refuses_a_simulator(simulator: InsiSimulator, pki: Pki) -> None:
    client = soap_client(simulator, pki, allow_simulator=False)
    with pytest.raises(InsiError) as caught:
        client.search_by_traits(by_traits(simulated("corsica")))
    assert type(caught.value) is InsiError
    assert str(caught.value) == "the INSi endpoint is a simulator; production refuses it"


def test_bad_query_is_refused_before_sending(client: SoapInsiClient, simulator: InsiSimulator) -> None:
    before = len(simulator.received), simulator.received[-1] if simulator.received else b""
    with pytest.raises(TraitError) as caught:
        client.search_by_traits(dataclasses.replace(by_traits(simulated("corsica")), sex="X"))
    assert caught.value.field == "sex"
    with pytest.raises(TraitError) as caught:
        client.search_by_vitale(dataclasses.replace(by_vitale(simulated("corsica")), nir_individu="141112A00401292"))
    assert caught.value.field == "nir_individu"
    assert (len(simulator.received), simulator.received[-1] if simulator.received else b"") == before


# --- the simulator checks what it receives -------------------------------------------------------------------
def post(sim: InsiSimulator, pki: Pki, body: bytes, content_type: str = "application/soap+xml; charset=utf-8",
         path: str = "/insi") -> tuple[int, str | None, bytes]:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    connection = http.client.HTTPSConnection("127.0.0.1", sim.port, context=context, timeout=5)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.getheader("X-INSi-Simulator"), response.read()
    finally:
        connection.close()


@pytest.fixture(scope="session")
def valid_traits(simulator: InsiSimulator, pki: Pki) -> bytes:
    soap_client(simulator, pki).search_by_traits(by_traits(simulated("homonym-paris"), place=True))
    return simulator.received[-1]


@pytest.fixture(scope="session")
def valid_vitale(simulator: InsiSimulator, pki: Pki) -> bytes:
    soap_client(simulator, pki).search_by_vitale(by_vitale(simulated("homonym-paris")))
    return simulator.received[-1]


def test_a_valid_raw_request_is_answered(simulator: InsiSimulator, pki: Pki, valid_traits: bytes) -> None:
    status, marker, body = post(simulator, pki, valid_traits)
    assert (status, marker) == (200, "true")
    assert b"<CodeCR>00</CodeCR>" in body


LPS = rb"<ctxlps:ContexteLPS.*?</ctxlps:ContexteLPS>"
BROKEN = {
    "wrong action": (b"IdentiteCertifiee:1.0.0:rechercherInsAvecTraitsIdentite<", b"IdentiteCertifiee:1.0.0:tout<",
                     "Action is not an INSi operation"),
    "missing MessageID": (rb"<wsa:MessageID>[^<]*</wsa:MessageID>", b"", "MessageID is missing"),
    "missing ContexteLPS": (LPS, b"", "ContexteLPS (urn:siram:lps:ctxlps) is missing"),
    "IDAM without R": (b' R="4"', b"", 'IDAM with R="4" is missing'),
    "bad nom": (b">MARTIN<", b">martin<", "NomNaissance must match"),
    "two given names": (b"<insi_recsans_ins:Prenom>JEAN</insi_recsans_ins:Prenom>",
                        b"<insi_recsans_ins:Prenom>JEAN</insi_recsans_ins:Prenom>" * 2, "Prenom must appear once"),
    "bad sexe": (b">M</insi_recsans_ins:Sexe>", b">H</insi_recsans_ins:Sexe>", "Sexe must be M or F"),
    "bad date": (b">1935-01-15<", b">15/01/1935<", "DateNaissance must be a date"),
    "bad COG": (b">75115<", b">7511<", "LieuNaissance must be a COG code"),
    "missing nom": (rb"<insi_recsans_ins:NomNaissance>[^<]*</insi_recsans_ins:NomNaissance>", b"",
                    "NomNaissance is missing"),
    "SOAP 1.1": (b"http://www.w3.org/2003/05/soap-envelope", b"http://schemas.xmlsoap.org/soap/envelope/",
                 "SOAP 1.1"),
    "DOCTYPE": (rb"\?>", b'?><!DOCTYPE x [<!ENTITY e "MARTIN">]>', "DOCTYPE"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_malformed_traits_request_gets_a_sender_fault(simulator: InsiSimulator, pki: Pki, valid_traits: bytes,
                                                      case: str) -> None:
    pattern, replacement, expected = BROKEN[case]
    broken = re.sub(pattern, replacement, valid_traits, count=1, flags=re.S)
    assert broken != valid_traits
    status, marker, body = post(simulator, pki, broken)
    fault = parse_xml(body).find(f"{q(NS_SOAP, 'Body')}/{q(NS_SOAP, 'Fault')}")
    assert status == 400 and marker == "true" and fault is not None
    error = read_fault(fault)
    assert error.code == ("VersionMismatch" if case == "SOAP 1.1" else "Sender")
    assert expected in error.reason
    assert "MARTIN" not in error.reason and "1935" not in error.reason


@pytest.mark.parametrize(("pattern", "replacement", "expected"), [
    (rb"<insi_recvit_ins:Cle>([0-9]{2})</insi_recvit_ins:Cle>", b"<insi_recvit_ins:Cle>00</insi_recvit_ins:Cle>",
     "MatriculeIndividu is not a NIR/NIA with a valid key"),
    (rb"<insi_recvit_ins:MatriculeOD>.*?</insi_recvit_ins:MatriculeOD>", b"", "MatriculeOD is missing"),
    (rb">1</insi_recvit_ins:RangNaissance>", b">0</insi_recvit_ins:RangNaissance>", "RangNaissance must be"),
    (rb"<insi_recvit_ins:RECVITALE ", b"<insi_recvit_ins:RECSANSVITALE ", "must be RECVITALE"),
])
def test_malformed_vitale_request_gets_a_sender_fault(simulator: InsiSimulator, pki: Pki, valid_vitale: bytes,
                                                      pattern: bytes, replacement: bytes, expected: str) -> None:
    broken = re.sub(pattern, replacement, valid_vitale, count=1, flags=re.S)
    if b"RECSANSVITALE " in broken:
        broken = broken.replace(b"</insi_recvit_ins:RECVITALE>", b"</insi_recvit_ins:RECSANSVITALE>")
    status, _, body = post(simulator, pki, broken)
    fault = parse_xml(body).find(f"{q(NS_SOAP, 'Body')}/{q(NS_SOAP, 'Fault')}")
    assert status == 400 and fault is not None
    assert expected in read_fault(fault).reason


def test_wrong_content_type_path_and_action_parameter(simulator: InsiSimulator, pki: Pki,
                                                       valid_traits: bytes) -> None:
    status, _, body = post(simulator, pki, valid_traits, content_type="text/xml; charset=utf-8")
    assert status == 400 and b"Content-Type must be application/soap+xml (SOAP 1.2)" in body
    status, _, body = post(simulator, pki, valid_traits,
                           content_type=f'application/soap+xml; action="{OPERATION_VITALE}"')
    assert status == 400 and b"differs from the WS-Addressing Action" in body
    status, _, body = post(simulator, pki, valid_traits,
                           content_type=f'application/soap+xml; action="{OPERATION_TRAITS}"')
    assert status == 200
    assert post(simulator, pki, valid_traits, path="/other")[0] == 404


# --- the twin answers as the simulator does -----------------------------------------------------------------
def outcome(client: SoapInsiClient | MemoryInsiClient, query: TraitsQuery | VitaleQuery) -> object:
    try:
        return client.search_by_traits(query) if isinstance(query, TraitsQuery) else client.search_by_vitale(query)
    except InsiFault as exc:
        return ("fault", exc.code, exc.reason, str(exc))


def queries(entry: SimulatedIdentity) -> list[TraitsQuery | VitaleQuery]:
    last = len(entry.identity.given_names) - 1
    return [by_traits(entry), by_traits(entry, given=last, place=True), by_vitale(entry),
            dataclasses.replace(by_traits(entry), birth_date=date(1900, 1, 1))]


@pytest.fixture(scope="module")
def quick_simulator(pki: Pki) -> Iterator[InsiSimulator]:
    with InsiSimulator(pki=pki, slow_seconds=0.05) as sim:
        yield sim


@pytest.mark.parametrize("entry", DEFAULT_IDENTITIES, ids=lambda e: e.label)
def test_memory_twin_answers_as_the_simulator(quick_simulator: InsiSimulator, pki: Pki,
                                              entry: SimulatedIdentity) -> None:
    soap, memory = soap_client(quick_simulator, pki), MemoryInsiClient()
    for query in queries(entry):
        assert outcome(memory, query) == outcome(soap, query)
    assert memory.calls == queries(entry)


# --- no health data in any message -------------------------------------------------------------------------
def test_no_error_message_holds_a_name_a_date_or_a_matricule(client: SoapInsiClient, simulator: InsiSimulator,
                                                             pki: Pki, valid_traits: bytes) -> None:
    messages: list[str] = []

    def collect(call: object) -> None:
        try:
            call()  # type: ignore[operator]
        except InsError as exc:
            messages.append(str(exc))
            messages.extend(str(v) for v in vars(exc).values())

    for entry in DEFAULT_IDENTITIES:
        traits, vitale = by_traits(entry), by_vitale(entry)
        collect(lambda t=traits: client.search_by_traits(dataclasses.replace(t, sex="X")))
        collect(lambda t=traits: client.search_by_traits(dataclasses.replace(t, birth_place="9")))
        collect(lambda t=traits: client.search_by_traits(dataclasses.replace(t, birth_family="?")))
        collect(lambda v=vitale: client.search_by_vitale(dataclasses.replace(v, nir_od=v.nir_od[:14] + "0")))
        collect(lambda v=vitale: client.search_by_vitale(dataclasses.replace(v, birth_date="1-2-3")))
        collect(lambda t=traits: soap_client(simulator, pki, timeout=SHORT).search_by_traits(t))
        collect(lambda t=traits: soap_client(simulator, pki, timeout=SHORT, allow_simulator=False).search_by_traits(t))
        for given in entry.identity.given_names:
            body = valid_traits.replace(b">MARTIN<", f">{entry.identity.birth_family.lower()}<".encode())
            body = body.replace(b">JEAN<", f">{given}<".encode()).replace(b">1935-01-15<", b">1935-13-01<")
            messages.append(post(simulator, pki, body)[2].decode())
    assert len(messages) > 60
    sensitive = {v for e in DEFAULT_IDENTITIES
                 for v in (e.identity.birth_family, *e.identity.given_names, e.identity.matricule,
                           e.identity.matricule[:13], e.identity.birth_date.isoformat())}
    for message in messages:
        text = etree.tostring(parse_xml(message.encode()), method="text", encoding="unicode") \
            if message.startswith("<?xml") else message
        leaked = [v for v in sensitive if v.lower() in text.lower()]
        assert not leaked, (leaked, text)


# --- the command line ----------------------------------------------------------------------------------------
def test_command_line_serves_until_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "ins.insi.simulator", "--port", "0", "--dir", str(tmp_path / "sim")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(6)]
        url = re.search(r"https://127\.0\.0\.1:[0-9]+/insi", lines[0])
        assert url, lines
        pki = make_pki(tmp_path / "sim")
        assert str(pki.client_cert) in lines[1] and str(pki.ca_cert) in lines[3]
        client = SoapInsiClient(url.group(0), str(pki.client_cert), str(pki.client_key), str(pki.ca_cert), timeout=5)
        assert client.search_by_traits(by_traits(simulated("corsica"))).code == "00"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

