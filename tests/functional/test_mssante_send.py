"""Sending documents over MSSanté (docs/mssante.md): queued in the outbox, built at send time into a message with
its IHE XDM package, submitted over SMTP (the in-memory mailbox here, a real STARTTLS server with a client
certificate in the last test), the rules of the resident's own mailbox applied, the acknowledgement recorded.
On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from lxml import etree

from dui.messaging import sending
from dui.messaging.tables import mssante_message
from dui.settings import MssanteSettings
from ins.insi.pki import Pki, make_pki
from mssante import InMemoryMailbox, Transient, parse_mdn, read_xdm
from tests.functional.test_dmp import PROVISIONAL, QUALIFIED, cli_run, demo, dlu, run  # noqa: F401
from tests.helpers import FhirClient
from tests.mailservers import running_smtp

HOSPITAL = "urgences@ch-exemple.mssante.fr"
INS = "231066912300104"  # demo-resident-001's INS (qualified)
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"


@pytest.fixture
def mailbox(app: Flask) -> Iterator[InMemoryMailbox]:
    """MSSanté configured (an applicative mailbox), its SMTP server the in-memory mailbox."""
    svc = app.extensions["dui"]
    saved = svc.settings
    svc.settings = saved.with_(mssante=MssanteSettings(
        smtp_url="smtp://mssante.invalid:587", sender="dui@ehpad-tilleuls.mssante.fr", cert="cert.pem",
        key="key.pem", ca="ca.pem"))
    box = InMemoryMailbox()
    svc.mail_sender_factory = lambda: box
    yield box
    svc.settings, svc.mail_sender_factory = saved, None


def through(settings: Any, url: str, pki: Pki, ca: Path | None = None) -> Any:
    """``settings`` sending through the SMTP server at ``url`` with the client certificate of ``pki``."""
    return settings.with_(mssante=MssanteSettings(
        smtp_url=url, sender="dui@ehpad-tilleuls.mssante.fr", cert=str(pki.client_cert), key=str(pki.client_key),
        ca=str(ca or pki.ca_cert), timeout=10))


def sendings(client: FhirClient, doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    body = client.get(f"DocumentReference/{doc['id']}").get_json()
    found = {}
    for ext in body.get("extension", []):
        if ext["url"] == sending.SENDING:
            parts = {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in ext["extension"]}
            found[parts["address"]] = parts
    return found


def the_xdm(message: EmailMessage) -> bytes:
    zips = [p for p in message.iter_attachments() if p.get_filename() == "IHE_XDM.ZIP"]
    assert len(zips) == 1
    return bytes(zips[0].get_content())


def test_a_dlu_goes_to_a_hospital_with_its_xdm_package(app: Flask, demo: FhirClient,  # noqa: F811
                                                       mailbox: InMemoryMailbox) -> None:
    doc = dlu(demo, QUALIFIED)
    queued = cli_run(app, "mssante", "send", doc["id"], "--to", HOSPITAL.upper())
    assert queued.exit_code == 0, queued.output
    assert sendings(demo, doc)[HOSPITAL]["state"] == "queued"
    again = cli_run(app, "mssante", "send", doc["id"], "--to", HOSPITAL)
    assert again.output.split(":")[1] == queued.output.split(":")[1]  # the same job
    assert run(app).delivered == 1
    assert len(mailbox.sent) == 1
    message = mailbox.sent[0]
    assert [str(a) for a in message["To"].addresses] == [HOSPITAL]
    assert message["Subject"].startswith("XDM/1.0/DDM+")
    assert message["X-MSS-CODECDA"] == "74207-2"
    assert message["Disposition-Notification-To"] == "dui@ehpad-tilleuls.mssante.fr"
    assert message["X-MSS-MES"] is None  # a professional may answer
    pdfs = [p for p in message.iter_attachments() if p.get_content_type() == "application/pdf"]
    assert len(pdfs) == 1 and bytes(pdfs[0].get_content()).startswith(b"%PDF")
    # An independent reading of the package: the zip's files and METADATA.XML agree
    archive = zipfile.ZipFile(BytesIO(the_xdm(message)))
    names = set(archive.namelist())
    assert {"INDEX.HTM", "README.TXT", "IHE_XDM/SUBSET01/METADATA.XML", "IHE_XDM/SUBSET01/DOC0001.XML"} <= names
    metadata = etree.fromstring(archive.read("IHE_XDM/SUBSET01/METADATA.XML"))
    (entry,) = metadata.iter(f"{{{RIM}}}ExtrinsicObject")
    slots = {s.get("name"): s.findtext(f"{{{RIM}}}ValueList/{{{RIM}}}Value") for s in entry.iter(f"{{{RIM}}}Slot")}
    cda = archive.read("IHE_XDM/SUBSET01/DOC0001.XML")
    assert slots["URI"] == "DOC0001.XML"
    assert slots["hash"] == hashlib.sha1(cda).hexdigest() and slots["size"] == str(len(cda))
    patient_ids = {e.get("value") for e in metadata.iter(f"{{{RIM}}}ExternalIdentifier")
                   if e.get("identificationScheme") == "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"}
    assert patient_ids == {f"{INS}^^^&1.2.250.1.213.1.4.10&ISO^NH"}
    # ...and the library's own reader agrees
    package = read_xdm(the_xdm(message))
    assert [d.unique_id for d in package.documents] == [sending.unique_id(doc)]
    state = sendings(demo, doc)[HOSPITAL]
    assert state["state"] == "sent" and state["messageId"] == message["Message-ID"]
    with app.extensions["dui"].unit_of_work(write=False) as session:
        rows = session.execute(mssante_message.select()).mappings().all()
    assert [(r["docref_id"], r["address"], r["state"]) for r in rows] == [(doc["id"], HOSPITAL, "sent")]


def test_an_outage_is_retried_with_the_same_message_id(app: Flask, demo: FhirClient,  # noqa: F811
                                                       mailbox: InMemoryMailbox) -> None:
    from datetime import timedelta

    doc = dlu(demo, QUALIFIED)
    assert cli_run(app, "mssante", "send", doc["id"], "--to", HOSPITAL).exit_code == 0
    mailbox.fail_with = Transient("the server is down")
    first = run(app)
    assert (first.delivered, first.retried) == (0, 1) and mailbox.sent == []
    mailbox.fail_with = None
    assert run(app, later=timedelta(minutes=5)).delivered == 1
    assert len(mailbox.sent) == 1
    assert sendings(demo, doc)[HOSPITAL]["state"] == "sent"


def test_the_residents_own_mailbox(app: Flask, demo: FhirClient, mailbox: InMemoryMailbox) -> None:  # noqa: F811
    doc = dlu(demo, QUALIFIED)
    mine = f"{INS}@{sending.PATIENT_DOMAIN}"
    assert cli_run(app, "mssante", "send", doc["id"], "--to", mine).exit_code == 0
    assert run(app).delivered == 1
    assert mailbox.sent[-1]["X-MSS-MES"] == "FIN"  # she is not expected to answer
    other = cli_run(app, "mssante", "send", doc["id"], "--to", f"279035121518989@{sending.PATIENT_DOMAIN}")
    assert other.exit_code == 1 and "not hers" in other.output
    provisional = dlu(demo, PROVISIONAL)
    refused = cli_run(app, "mssante", "send", provisional["id"], "--to", f"100000000000000@{sending.PATIENT_DOMAIN}")
    assert refused.exit_code == 1 and "qualified" in refused.output


def test_invisible_patient_never_reaches_her_mailbox_even_when_masked_after_queuing(
        app: Flask, demo: FhirClient, mailbox: InMemoryMailbox) -> None:  # noqa: F811
    doc = dlu(demo, QUALIFIED)
    mine = f"{INS}@{sending.PATIENT_DOMAIN}"
    assert cli_run(app, "mssante", "send", doc["id"], "--to", mine).exit_code == 0
    assert cli_run(app, "dmp", "mask", doc["id"], "--code", "INVISIBLE_PATIENT").exit_code == 0
    report = run(app)
    assert report.dead >= 1 and mailbox.sent == []
    state = sendings(demo, doc)[mine]
    assert state["state"] == "refused" and "INVISIBLE_PATIENT" in state["detail"]
    again = cli_run(app, "mssante", "send", doc["id"], "--to", mine)
    assert again.exit_code == 1 and "INVISIBLE_PATIENT" in again.output
    assert cli_run(app, "mssante", "send", doc["id"], "--to", HOSPITAL).exit_code == 0  # professionals: yes
    run(app)
    assert len(mailbox.sent) == 1


def test_a_provisional_identity_goes_to_a_professional_by_its_local_identifier(
        app: Flask, demo: FhirClient, mailbox: InMemoryMailbox) -> None:  # noqa: F811
    doc = dlu(demo, PROVISIONAL)
    assert cli_run(app, "mssante", "send", doc["id"], "--to", HOSPITAL).exit_code == 0
    assert run(app).delivered == 1
    package = read_xdm(the_xdm(mailbox.sent[0]))
    (entry,) = package.documents
    assert entry.patient_id.endswith("^PI") and "1.2.250.1.213.1.4.10" not in entry.patient_id


def test_the_acknowledgement_comes_back(app: Flask, demo: FhirClient, mailbox: InMemoryMailbox) -> None:  # noqa: F811
    from mssante import IntegrationCode, build_mdn, parse_message

    doc = dlu(demo, QUALIFIED)
    assert cli_run(app, "mssante", "send", doc["id"], "--to", HOSPITAL).exit_code == 0
    run(app)
    sent = parse_message(mailbox.sent[0].as_bytes(policy=policy.SMTP))
    mdn = build_mdn(sent, sender=HOSPITAL, final_recipient=HOSPITAL, reporting_ua="hopital",
                    error=IntegrationCode.INS_TRAITS_MISMATCH)
    svc = app.extensions["dui"]
    with svc.unit_of_work(write=True) as session:
        store = svc.fhir_context(session, svc_actor()).internal
        assert sending.acknowledge(session, store, parse_mdn(mdn), svc.clock())
        other = replace(parse_mdn(mdn), original_message_id="<someone-else@x>")
        assert not sending.acknowledge(session, store, other, svc.clock())
    state = sendings(demo, doc)[HOSPITAL]
    assert state["state"] == "error" and state["detail"].startswith("904")


def svc_actor() -> Any:
    from dui.auth.actor import SYSTEM

    return SYSTEM


def test_sending_refuses_what_it_cannot_send(app: Flask, demo: FhirClient) -> None:  # noqa: F811
    doc = dlu(demo, QUALIFIED)
    unset = cli_run(app, "mssante", "send", doc["id"], "--to", HOSPITAL)
    assert unset.exit_code == 1 and "DUI_MSSANTE_SMTP_URL" in unset.output and unset.output.count("\n") == 1
    svc = app.extensions["dui"]
    saved = svc.settings
    svc.settings = saved.with_(mssante=MssanteSettings(smtp_url="smtp://x.invalid", sender="a@b.fr", cert="c",
                                                       key="k", ca="ca"))
    try:
        bad = cli_run(app, "mssante", "send", doc["id"], "--to", "not an address")
        assert bad.exit_code == 1 and "not an e-mail address" in bad.output
        unknown = cli_run(app, "mssante", "send", "nothing-here", "--to", HOSPITAL)
        assert unknown.exit_code == 1
    finally:
        svc.settings = saved


@pytest.mark.parametrize("fault", ["451 4.3.0 Try again later", "down"])
def test_through_a_real_smtp_server_with_starttls_and_a_client_certificate(
        app: Flask, demo: FhirClient, tmp_path_factory: pytest.TempPathFactory, fault: str) -> None:  # noqa: F811
    """A transient failure first (a 4xx reply, or the server down), then the server answers: one message."""
    from datetime import timedelta

    pki: Pki = make_pki(tmp_path_factory.mktemp("mssante-send-pki"))
    svc = app.extensions["dui"]
    saved = svc.settings
    with running_smtp(pki) as server:
        svc.settings = through(saved, server.url, pki)
        try:
            doc = dlu(demo, QUALIFIED)
            assert cli_run(app, "mssante", "send", doc["id"], "--to", HOSPITAL).exit_code == 0
            if fault == "down":
                server.stop()
            else:
                server.fail_next.append(fault)
            first = run(app)
            assert (first.delivered, first.retried) == (0, 1) and server.received == []
            if fault == "down":
                server.start()
            assert run(app, later=timedelta(minutes=5)).delivered == 1
        finally:
            svc.settings = saved
        assert len(server.received) == 1
        got = server.received[0]
        assert got.rcpt_tos == (HOSPITAL,) and got.client_cn
        message = BytesParser(policy=policy.default).parsebytes(got.data)
        assert isinstance(message, EmailMessage)
        assert [d.unique_id for d in read_xdm(the_xdm(message)).documents] == [sending.unique_id(doc)]


def test_a_permanent_refusal_is_a_dead_letter(app: Flask, demo: FhirClient,  # noqa: F811
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    pki: Pki = make_pki(tmp_path_factory.mktemp("mssante-refuse-pki"))
    svc = app.extensions["dui"]
    saved = svc.settings
    with running_smtp(pki) as server:
        svc.settings = through(saved, server.url, pki)
        try:
            doc = dlu(demo, QUALIFIED)
            assert cli_run(app, "mssante", "send", doc["id"], "--to", HOSPITAL).exit_code == 0
            server.fail_next.append("550 5.7.1 Message refused")
            assert run(app).dead == 1
        finally:
            svc.settings = saved
    state = sendings(demo, doc)[HOSPITAL]
    assert state["state"] == "refused" and "refused" in state["detail"]
    failed = cli_run(app, "outbox", "list", "--failed")
    assert "mssante.send" in failed.output


def test_the_staff_client_queues_a_send_with_a_fhir_operation(app: Flask, demo: FhirClient,  # noqa: F811
                                                              mailbox: InMemoryMailbox) -> None:
    doc = dlu(demo, QUALIFIED)
    to = {"resourceType": "Parameters", "parameter": [{"name": "to", "valueString": HOSPITAL}]}
    queued = demo.post(f"DocumentReference/{doc['id']}/$mssante-send", to)
    assert queued.status_code == 202, queued.get_data(as_text=True)
    job = {p["name"]: p.get("valueInteger", p.get("valueCode")) for p in queued.get_json()["parameter"]}
    assert job["state"] == "due"
    missing = demo.post(f"DocumentReference/{doc['id']}/$mssante-send", {"resourceType": "Parameters"})
    assert missing.status_code == 400
    assert run(app).delivered == 1 and len(mailbox.sent) == 1


def test_a_tls_failure_stops_until_the_operator_retries(app: Flask, demo: FhirClient,  # noqa: F811
                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A server whose certificate our CA does not vouch for: a dead letter (retrying cannot help), delivered once
    after the configuration is mended and the operator retries it."""
    pki: Pki = make_pki(tmp_path_factory.mktemp("mssante-tls-pki"))
    stranger: Pki = make_pki(tmp_path_factory.mktemp("mssante-tls-stranger"))
    svc = app.extensions["dui"]
    saved = svc.settings

    with running_smtp(pki) as server:
        try:
            svc.settings = through(saved, server.url, pki, ca=stranger.ca_cert)
            doc = dlu(demo, QUALIFIED)
            assert cli_run(app, "mssante", "send", doc["id"], "--to", HOSPITAL).exit_code == 0
            assert run(app).dead == 1 and server.received == []
            svc.settings = through(saved, server.url, pki)
            job = cli_run(app, "outbox", "list", "--failed").output.splitlines()[1].split()[0]
            assert cli_run(app, "outbox", "retry", job).exit_code == 0
            assert run(app).delivered == 1
        finally:
            svc.settings = saved
        assert len(server.received) == 1
