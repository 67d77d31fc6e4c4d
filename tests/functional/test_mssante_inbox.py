"""MSSanté mail received (docs/mssante.md, "Receiving"), end to end through ``dui worker --once`` and
``dui mssante inbox``: a FLUDR sent back by the emergency department, in an IHE XDM archive, lands on the resident
its INS names (its items in the record) and is acknowledged (MDN, RFC 8098); what cannot be filed by itself is
queued with the MSSanté integration code (902 INS unknown, 903 INS missing, 904 identity vigilance, 905 INS
malformed, 900 the rest), answered with that code, and filed or rejected by a person; the queue shows through FHIR
as a Task to the receiving establishment's staff only. The mailbox is ``mssante.InMemoryMailbox``, and once the
real Dovecot of tests/mailservers.py. On SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.cli import ScriptInfo
from lxml import etree
from sqlalchemy import select

from dui.cli import cli
from dui.cli.worker import poll_inbox
from dui.demo.data import resident_bundle, setup_bundle
from dui.messaging import sending
from dui.messaging.inbox import RECONCILE, TASK_CODES
from dui.messaging.tables import mssante_inbox, mssante_mailbox, mssante_message, mssante_received
from dui.services import Services
from dui.settings import MssanteSettings
from ins.insi.pki import Pki, make_pki
from mssante import (
    InMemoryMailbox,
    Outgoing,
    Permanent,
    Transient,
    XdmFile,
    build_mdn,
    build_message,
    build_xdm,
    fill_document_slots,
    parse_mdn,
    parse_message,
    xdm_subject,
)
from tests.conftest import conformance_dir
from tests.helpers import FhirClient
from tests.mailservers import DovecotServer, running_dovecot
from tests.mssante.samples import SENDER, Doc, submit_objects, zip_of

MAILBOX = "dui@ehpad-tilleuls.mssante.fr"  # the establishment's applicative mailbox (DUI_MSSANTE_FROM)
URGENCES = "urgences@ch-partenaire.mssante.fr"
TILLEULS_ORG, PARC_ORG = "demo-ehpad-les-tilleuls", "demo-ehpad-le-parc"
TILLEULS, PARC = "690001425", "690002662"
RESIDENT = "demo-resident-002"  # at Les Tilleuls
H = "{urn:hl7-org:v3}"
INS_TEST = "1.2.250.1.213.1.4.10"
PASSWORD = "Courrier-MSSante-2026!"


# -- the world ---------------------------------------------------------------------------------------------------


@dataclass
class Boxes:
    """The establishment's mailbox as the service reads it, and the SMTP side it answers through."""

    inbox: InMemoryMailbox
    outbox: InMemoryMailbox


@pytest.fixture
def boxes(app: Flask) -> Iterator[Boxes]:
    svc: Services = app.extensions["dui"]
    settings = svc.settings
    boxes = Boxes(InMemoryMailbox(uidvalidity=7), InMemoryMailbox())
    # DUI_MSSANTE_*: what the service is configured with (the factories stand in for the servers)
    svc.settings = settings.with_(mssante=MssanteSettings(smtp_url="smtps://smtp.unused.invalid",
                                                          imap_url="imaps://imap.unused.invalid", sender=MAILBOX,
                                                          cert="unused.pem", key="unused.key", ca="unused-ca.pem"))
    svc.mail_receiver_factory, svc.mail_sender_factory = (lambda: boxes.inbox), (lambda: boxes.outbox)
    yield boxes
    svc.settings, svc.mail_receiver_factory, svc.mail_sender_factory = settings, None, None


@pytest.fixture
def demo(client: FhirClient) -> FhirClient:
    for bundle in (setup_bundle(), *(resident_bundle(i, date(2026, 11, 30)) for i in (1, 2, 3))):
        assert client.post("", bundle).status_code == 200
    # the establishment's Organization carries its MSSanté address: received mail is its own
    org = client.get(f"Organization/{TILLEULS_ORG}").get_json()
    org["telecom"] = [*org.get("telecom", []), {"system": "email", "value": MAILBOX, "use": "work"}]
    del org["meta"]
    assert client.put(f"Organization/{TILLEULS_ORG}", org).status_code == 200
    return client


def cli_run(app: Flask, *args: str) -> Any:
    return CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app))


def worker(app: Flask) -> str:
    done = cli_run(app, "worker", "--once")
    assert done.exit_code == 0, done.output
    inbox = [line for line in done.output.splitlines() if "MSSanté inbox" in line]
    assert len(inbox) == 1, done.output
    return inbox[0]


def resident(n: int) -> dict[str, Any]:
    bundle = resident_bundle(n, date(2026, 11, 30))
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


# -- documents and messages --------------------------------------------------------------------------------------


def fludr(*, ins: str | None, ins_oid: str = INS_TEST, family: str | None = None, given: str | None = None,
          birth: str | None = None) -> bytes:
    """The official FLUDR example (ANS TestContenuCDA) about someone else: an INS (None: no INS), names, a birth
    date; its own ClinicalDocument/id each time."""
    source = (conformance_dir("cda", "ExemplesCDA") / "DLU-EHPAD-FLUDR_2022.01.xml").read_bytes()
    root = etree.fromstring(source)
    root.find(f"{H}id").set("root", f"1.2.250.1.999.77.{uuid.uuid4().int % 10**12}")
    role = root.find(f"{H}recordTarget/{H}patientRole")
    ins_id = next(e for e in role.findall(f"{H}id") if e.get("root") == INS_TEST)
    if ins is None:
        role.remove(ins_id)
    else:
        ins_id.set("extension", ins)
        ins_id.set("root", ins_oid)
    for telecom in role.findall(f"{H}telecom"):
        if "patient.mssante.fr" in (telecom.get("value") or ""):
            role.remove(telecom)
    name = role.find(f"{H}patient/{H}name")
    for part, value in (("family", family), ("given", given)):
        if value is not None:
            for element in name.findall(f"{H}{part}"):
                element.text = value
    if birth is not None:
        role.find(f"{H}patient/{H}birthTime").set("value", birth)
    return bytes(etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8"))


def fludr_for(n: int, **changes: Any) -> bytes:
    """The FLUDR of demo resident ``n``: her INS, birth names and birth date (``changes`` alter them)."""
    patient = resident(n)
    ins = next(i for i in patient["identifier"] if i["system"] == f"urn:oid:{INS_TEST}")["value"]
    official = next(nm for nm in patient["name"] if nm["use"] == "official")
    values = {"ins": ins, "family": official["family"].upper(), "given": official["given"][0],
              "birth": patient["birthDate"].replace("-", "")}
    return fludr(**{**values, **changes})


def xdm(cda: bytes, patient_cx: str) -> bytes:
    doc = Doc(f"urn:uuid:{uuid.uuid4()}", f"1.2.250.1.999.77^{uuid.uuid4().hex[:12]}", "text/xml",
              "Fiche de liaison d'urgence - retour")
    document = XdmFile("DOC0001.XML", cda, "FLUDR")
    return build_xdm([document], fill_document_slots(submit_objects([doc], patient_cx), {doc.entry_id: document}),
                     SENDER)


def message(cda: bytes | None = None, *, ins: str = "000000000000000", archive: bytes | None = None,
            notify: bool = True, message_id: str | None = None) -> EmailMessage:
    """A message from the emergency department to the establishment's mailbox: the XDM of ``cda`` (or a raw
    ``archive``), asking for an MDN when ``notify``."""
    outgoing = Outgoing(sender=URGENCES, to=(MAILBOX,), subject=xdm_subject("FLUDR", "DUPONT", "Andrée",
                                                                            date(1926, 2, 11)),
                        body="Retour des urgences.\n", xdm=xdm(cda, f"{ins}^^^&{INS_TEST}&ISO") if cda else None,
                        notification_to=URGENCES if notify else None,
                        message_id=message_id or f"<{uuid.uuid4().hex}@ch-partenaire.mssante.fr>")
    built = build_message(outgoing)
    if archive is not None:
        built.add_attachment(archive, maintype="application", subtype="zip", filename="IHE_XDM.ZIP")
    return built


def mdns(boxes: Boxes) -> list[Any]:
    return [parse_mdn(m) for m in boxes.outbox.sent]


def rows(app: Flask, table: Any) -> list[Any]:
    svc: Services = app.extensions["dui"]
    with svc.unit_of_work(write=False) as session:
        return list(session.execute(select(table).order_by(*table.primary_key.columns)).mappings())


def search(client: FhirClient, query: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in client.search(query).get("entry", [])]


# -- filed -------------------------------------------------------------------------------------------------------


@pytest.mark.conformance
def test_a_fludr_lands_on_its_resident_with_its_items_and_is_acknowledged(app: Flask, demo: FhirClient,
                                                                          boxes: Boxes) -> None:
    sent = message(fludr_for(2))
    boxes.inbox.deliver(sent)
    assert worker(app) == ("dui worker: MSSanté inbox: 1 filed, 0 queued, 0 acknowledgement(s), 0 duplicate(s), "
                           "0 error(s)")
    (doc,) = search(demo, f"DocumentReference?subject=Patient/{RESIDENT}&type=http://loinc.org|74207-2"
                          "&format=urn:asip:ci-sis:fludr:2017")
    assert doc["content"][0]["format"]["code"] == "urn:asip:ci-sis:fludr:2017"
    assert len(search(demo, f"Condition?subject=Patient/{RESIDENT}&code=J41.0")) == 1  # the exit diagnosis
    treatments = search(demo, f"MedicationStatement?subject=Patient/{RESIDENT}")
    assert treatments and all(t["derivedFrom"] == [{"reference": f"DocumentReference/{doc['id']}"}]
                              for t in treatments)
    # the message moved out of the inbox; the acknowledgement asked for went back, "processed"
    assert boxes.inbox.folder == {} and [m.uid for m in boxes.inbox.processed] == [1]
    (mdn,) = mdns(boxes)
    assert mdn.processed and mdn.original_message_id == sent["Message-ID"]
    assert boxes.outbox.sent[0]["To"] == URGENCES and boxes.outbox.sent[0]["From"] == MAILBOX
    (received,) = rows(app, mssante_received)
    assert (received["outcome"], received["mdn_state"], received["mdn"]) == ("filed", "sent", None)
    assert (received["message_id"], received["folder"], received["uidvalidity"], received["uid"]) == (
        sent["Message-ID"], "INBOX", 7, 1)
    # nothing new, then the same message again (moved back, or a second copy): nothing is filed twice
    assert worker(app).startswith("dui worker: MSSanté inbox: 0 filed, 0 queued")
    boxes.inbox.deliver(sent)
    assert "1 duplicate(s)" in worker(app)
    assert len(search(demo, f"DocumentReference?subject=Patient/{RESIDENT}&format=urn:asip:ci-sis:fludr:2017")) == 1
    assert len(search(demo, f"Condition?subject=Patient/{RESIDENT}&code=J41.0")) == 1
    assert len(boxes.outbox.sent) == 1 and len(rows(app, mssante_received)) == 1
    assert rows(app, mssante_inbox) == []


@pytest.mark.conformance
def test_without_smtp_the_mdn_is_recorded_as_not_sent(app: Flask, demo: FhirClient, boxes: Boxes) -> None:
    svc: Services = app.extensions["dui"]
    svc.mail_sender_factory = None
    svc.settings = svc.settings.with_(mssante=MssanteSettings(
        imap_url="imaps://imap.unused.invalid", sender=MAILBOX, cert="c.pem", key="k.pem", ca="ca.pem"))
    boxes.inbox.deliver(message(fludr_for(2)))
    assert worker(app).startswith("dui worker: MSSanté inbox: 1 filed")
    (received,) = rows(app, mssante_received)
    assert received["mdn_state"] == "unsent" and "DUI_MSSANTE_SMTP_URL" in received["mdn_detail"]
    assert received["mdn"] is not None  # kept sealed: `dui outbox retry` sends it once SMTP is configured
    failed = cli_run(app, "outbox", "list", "--failed")
    (job,) = [line.split()[0] for line in failed.output.splitlines() if "mssante.mdn" in line]
    svc.mail_sender_factory = lambda: boxes.outbox
    assert cli_run(app, "outbox", "retry", job).exit_code == 0
    worker(app)
    (mdn,) = mdns(boxes)
    assert mdn.processed
    (received,) = rows(app, mssante_received)
    assert (received["mdn_state"], received["mdn"]) == ("sent", None)


def test_an_unexpected_failure_queues_the_message_and_logs_no_content(app: Flask, demo: FhirClient, boxes: Boxes,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    from dui.messaging import receiving

    def broken(incoming: Any) -> Any:
        raise RuntimeError("DUPONT Andrée 226022A00400359")  # what a careless message could quote

    monkeypatch.setattr(receiving, "cda_documents", broken)
    boxes.inbox.deliver(message(None))
    assert worker(app).startswith("dui worker: MSSanté inbox: 0 filed, 1 queued, 0 acknowledgement(s), "
                                  "0 duplicate(s), 1 error(s)")
    (item,) = rows(app, mssante_inbox)
    assert item["code"] == "900" and "internal error" in item["reason"] and item["raw"] is not None
    assert boxes.inbox.folder == {}
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "RuntimeError" in logged and "DUPONT" not in logged and "226022A00400359" not in logged


# -- queued ------------------------------------------------------------------------------------------------------


@pytest.mark.conformance
@pytest.mark.parametrize(("changes", "code", "words"), [
    ({"ins": "279035121518989"}, "902", "no resident holds the document's INS"),
    ({"ins": None}, "903", "without an INS"),
    ({"birth": "19300101"}, "904", "identity vigilance"),
    ({"family": "MARTIN"}, "904", "identity vigilance"),
    ({"ins": "12345"}, "905", "malformed"),
    ({"ins": "226022A00400358"}, "905", "control key"),
])
def test_what_cannot_be_matched_is_queued_with_its_code_and_answered(app: Flask, demo: FhirClient, boxes: Boxes,
                                                                    changes: dict[str, Any], code: str,
                                                                    words: str) -> None:
    cda = fludr_for(2, **changes)
    boxes.inbox.deliver(message(cda))
    assert worker(app).startswith("dui worker: MSSanté inbox: 0 filed, 1 queued")
    assert search(demo, "DocumentReference?format=urn:asip:ci-sis:fludr:2017") == []
    assert search(demo, "Condition?code=J41.0") == []
    (item,) = rows(app, mssante_inbox)
    assert (item["code"], item["state"], item["owner"]) == (code, "pending", TILLEULS_ORG)
    assert words in item["reason"] and item["sender_domain"] == "ch-partenaire.mssante.fr"
    (mdn,) = mdns(boxes)
    assert not mdn.processed and mdn.error_code == code and "error" in mdn.modifiers
    listed = cli_run(app, "mssante", "inbox", "list")
    assert listed.exit_code == 0
    header, line = listed.output.splitlines()
    assert header.split("\t") == ["id", "received", "sender", "code", "reason", "state"]
    assert line.split("\t")[0] == str(item["id"]) and line.split("\t")[2:4] == ["ch-partenaire.mssante.fr", code]
    assert line.endswith("\tpending")


@pytest.mark.conformance
def test_the_raw_message_is_kept_encrypted_and_never_in_clear(app: Flask, demo: FhirClient, boxes: Boxes) -> None:
    sent = message(fludr(ins="279035121518989"))
    boxes.inbox.deliver(sent)
    worker(app)
    (item,) = rows(app, mssante_inbox)
    raw = bytes(item["raw"])
    assert raw[0] == 0xD1  # dui.crypto.envelope format 1
    for clear in (b"279035121518989", b"DUPONT", b"PAT-TROIS", b"XDM/1.0/DDM", b"ClinicalDocument"):
        assert clear not in raw
    assert "DUPONT" not in item["reason"] and "279035121518989" not in item["reason"]


def test_hostile_or_empty_messages_are_queued_with_the_reason(app: Flask, demo: FhirClient, boxes: Boxes) -> None:
    slip = zip_of([("../../evil.xml", b"<x/>"), ("IHE_XDM/SUBSET01/METADATA.XML", b"<x/>")])
    boxes.inbox.deliver(message(archive=slip))
    boxes.inbox.deliver(message(None))  # a plain message: no archive
    boxes.inbox.deliver(b"\x00\x01 not a message at all")
    assert worker(app).startswith("dui worker: MSSanté inbox: 0 filed, 3 queued")
    items = rows(app, mssante_inbox)
    assert [i["code"] for i in items] == ["900", "900", "900"]
    assert items[0]["reason"].startswith("IHE_XDM archive 1 refused: ") and "'..'" in items[0]["reason"]
    assert "no IHE_XDM.ZIP archive" in items[1]["reason"]
    assert items[2]["reason"].startswith("the message is refused") and items[2]["sender_domain"] == "(unknown)"
    assert [m.error_code for m in mdns(boxes)] == ["900", "900"]  # the third asked for nothing it could read
    assert boxes.inbox.folder == {}


# -- the reconciliation workflow ---------------------------------------------------------------------------------


@pytest.mark.conformance
def test_assign_files_the_message_on_the_resident_named(app: Flask, demo: FhirClient, boxes: Boxes) -> None:
    boxes.inbox.deliver(message(fludr_for(2, ins=None)))  # 903: the same person, without her INS
    boxes.inbox.deliver(message(fludr(ins="279035121518989")))  # 902: someone else
    worker(app)
    first, second = rows(app, mssante_inbox)
    # identity vigilance still applies: the other document is not this resident's
    refused = cli_run(app, "mssante", "inbox", "assign", str(second["id"]), RESIDENT)
    assert refused.exit_code == 1 and refused.output.count("\n") == 1 and "identity vigilance" in refused.output
    assert cli_run(app, "mssante", "inbox", "assign", "999", RESIDENT).exit_code == 1
    done = cli_run(app, "mssante", "inbox", "assign", str(first["id"]), RESIDENT)
    assert done.exit_code == 0, done.output
    (doc,) = search(demo, f"DocumentReference?subject=Patient/{RESIDENT}&format=urn:asip:ci-sis:fludr:2017")
    assert f"DocumentReference/{doc['id']}" in done.output
    assert len(search(demo, f"Condition?subject=Patient/{RESIDENT}&code=J41.0")) == 1
    first, second = rows(app, mssante_inbox)
    assert (first["state"], first["patient_id"], first["decided_by"]) == ("assigned", RESIDENT, "cli:cli")
    assert doc["id"] in first["docref_ids"] and second["state"] == "pending"
    again = cli_run(app, "mssante", "inbox", "assign", str(first["id"]), RESIDENT)
    assert again.exit_code == 1 and "assigned already" in again.output
    task = demo.get(f"Task/{first['task_id']}").get_json()
    assert task["status"] == "completed" and task["for"] == {"reference": f"Patient/{RESIDENT}"}
    assert task["output"][0]["valueReference"] == {"reference": f"DocumentReference/{doc['id']}"}
    listed = cli_run(app, "mssante", "inbox", "list").output.splitlines()
    assert len(listed) == 2 and listed[1].startswith(f"{second['id']}\t")


def test_reject_closes_the_message(app: Flask, demo: FhirClient, boxes: Boxes) -> None:
    boxes.inbox.deliver(message(None))
    worker(app)
    (item,) = rows(app, mssante_inbox)
    assert cli_run(app, "mssante", "inbox", "reject", str(item["id"]), "--reason", " ").exit_code == 1
    done = cli_run(app, "mssante", "inbox", "reject", str(item["id"]), "--reason", "not one of ours: sender told")
    assert done.exit_code == 0, done.output
    (item,) = rows(app, mssante_inbox)
    assert (item["state"], item["note"], item["decided_by"]) == ("rejected", "not one of ours: sender told", "cli:cli")
    task = demo.get(f"Task/{item['task_id']}").get_json()
    assert task["status"] == "rejected" and task["statusReason"]["text"] == "not one of ours: sender told"
    assert cli_run(app, "mssante", "inbox", "list").output.splitlines()[1:] == []
    assert cli_run(app, "mssante", "inbox", "list", "--all").output.splitlines()[1].endswith("\trejected")
    twice = cli_run(app, "mssante", "inbox", "reject", str(item["id"]), "--reason", "again")
    assert twice.exit_code == 1 and twice.output.count("\n") == 1
    svc: Services = app.extensions["dui"]
    with svc.unit_of_work(write=False) as session:
        from dui.audit.tables import audit_event

        actions = [(r.action, r.actor_kind) for r in session.execute(
            select(audit_event.c.action, audit_event.c.actor_kind).where(
                audit_event.c.action.like("mssante-%")).order_by(audit_event.c.seq))]
    assert actions == [("mssante-receive", "system"), ("mssante-reject", "cli")]


# -- acknowledgements of what we sent ----------------------------------------------------------------------------


def test_an_mdn_for_a_message_we_sent_updates_its_state(app: Flask, demo: FhirClient, boxes: Boxes) -> None:
    dlu = demo.post(f"Patient/{RESIDENT}/$dlu", {"resourceType": "Parameters"}).get_json()
    doctor = "dr.martin@ch-partenaire.mssante.fr"
    assert cli_run(app, "mssante", "send", dlu["id"], "--to", doctor).exit_code == 0
    worker(app)
    (ours,) = boxes.outbox.sent
    (row,) = rows(app, mssante_message)
    assert row["state"] == "sent" and row["message_id"] == ours["Message-ID"]
    answer = build_mdn(parse_message(ours.as_bytes(policy=email_policy.SMTP)), sender=doctor,
                       final_recipient=doctor, reporting_ua="Hopital; 1.0")
    boxes.inbox.deliver(answer)
    assert worker(app) == ("dui worker: MSSanté inbox: 0 filed, 0 queued, 1 acknowledgement(s), 0 duplicate(s), "
                           "0 error(s)")
    (row,) = rows(app, mssante_message)
    assert row["state"] == "processed"
    doc = demo.get(f"DocumentReference/{dlu['id']}").get_json()
    states = [p for e in doc["extension"] if e["url"] == sending.SENDING for p in e["extension"]
              if p["url"] == "state"]
    assert states == [{"url": "state", "valueCode": "processed"}]
    assert len(boxes.outbox.sent) == 1  # an MDN is never answered
    # an MDN about a message not sent from here: queued for a person, never dropped
    stranger = build_mdn(parse_message(message(None).as_bytes(policy=email_policy.SMTP)), sender=doctor,
                         final_recipient=doctor, reporting_ua="Hopital; 1.0")
    boxes.inbox.deliver(stranger)
    assert "1 queued" in worker(app)
    (item,) = rows(app, mssante_inbox)
    assert item["code"] is None and "not sent from here" in item["reason"]


# -- the server down ---------------------------------------------------------------------------------------------


@pytest.mark.conformance
def test_a_mailbox_that_cannot_be_reached_does_not_stop_the_outbox(app: Flask, demo: FhirClient,
                                                                   boxes: Boxes) -> None:
    boxes.inbox.deliver(message(fludr_for(2)))
    report = poll_inbox(app.extensions["dui"])  # taken, its MDN queued in the outbox
    assert report is not None and report.filed == 1 and boxes.outbox.sent == []
    boxes.inbox.fail_with = Transient("the IMAP server refused the connection")
    done = cli_run(app, "worker", "--once")
    assert done.exit_code == 0, done.output
    assert "1 outbox job(s) delivered" in done.output and len(boxes.outbox.sent) == 1
    (line,) = [x for x in done.output.splitlines() if "MSSanté inbox" in x]
    assert line.endswith("stopped: the mailbox cannot be read: the IMAP server refused the connection")


def test_a_permanent_mailbox_failure_makes_the_worker_fail(app: Flask, demo: FhirClient, boxes: Boxes) -> None:
    boxes.inbox.fail_with = Permanent("the IMAP server's certificate is not trusted")
    done = cli_run(app, "worker", "--once")
    assert done.exit_code == 1 and "outbox job(s) delivered" in done.output
    assert "stopped: the mailbox cannot be read: the IMAP server's certificate is not trusted" in done.output


class FlakyMarks(InMemoryMailbox):
    """The in-memory mailbox whose server fails to move messages while ``down``."""

    down = False

    def mark_processed(self, uid: int, uidvalidity: int) -> None:
        if self.down:
            raise Transient("the IMAP server closed the connection")
        super().mark_processed(uid, uidvalidity)


def test_a_message_not_marked_or_read_again_after_a_uidvalidity_change_is_taken_once(
        app: Flask, demo: FhirClient, boxes: Boxes) -> None:
    svc: Services = app.extensions["dui"]
    flaky = FlakyMarks(uidvalidity=7)
    svc.mail_receiver_factory = lambda: flaky
    first, second = message(None), message(None)
    flaky.deliver(first)
    flaky.deliver(second)
    flaky.down = True
    line = worker(app)  # the first is taken, then cannot be moved: the poll stops there
    assert line.startswith("dui worker: MSSanté inbox: 0 filed, 1 queued, 0 acknowledgement(s), 0 duplicate(s), "
                           "1 error(s); stopped: message uid 1 taken but not marked processed")
    assert sorted(flaky.folder) == [1, 2] and rows(app, mssante_received)[0]["uid"] == 1
    flaky.down = False
    assert "1 queued, 0 acknowledgement(s), 1 duplicate(s), 0 error(s)" in worker(app)  # the first, then the second
    assert flaky.folder == {} and len(rows(app, mssante_inbox)) == 2
    # the server renumbers the folder (a rebuild): read again from its start, nothing taken twice
    flaky.deliver(first)
    third = message(None)
    flaky.deliver(third)
    flaky.change_uidvalidity(8)
    assert "1 queued, 0 acknowledgement(s), 1 duplicate(s), 0 error(s)" in worker(app)
    assert [r["message_id"] for r in rows(app, mssante_inbox)] == [first["Message-ID"], second["Message-ID"],
                                                                    third["Message-ID"]]
    (cursor,) = rows(app, mssante_mailbox)
    assert (cursor["folder"], cursor["uidvalidity"], cursor["last_uid"]) == ("INBOX", 8, 2)
    assert len(mdns(boxes)) == 3  # each answered once (900: nothing to file)


# -- FHIR: the queue as Tasks, for the receiving establishment only ---------------------------------------------


def token(app: Flask, login: str, role: str, finess: str) -> str:
    made = app.test_cli_runner().invoke(args=["users", "create", login, "--role", role, "--establishment", finess,
                                              "--password-stdin"], input=PASSWORD + "\n")
    assert made.exit_code == 0, made.output
    answer = app.test_client().post("/auth/token", data={"grant_type": "password", "username": login,
                                                         "password": PASSWORD})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return str(answer.get_json()["access_token"])


def test_the_queue_is_a_task_for_the_receiving_establishment_only(app: Flask, demo: FhirClient,
                                                                  boxes: Boxes) -> None:
    boxes.inbox.deliver(message(None))  # 900: nothing to file
    worker(app)
    (item,) = rows(app, mssante_inbox)
    web = app.test_client()
    query = f"/fhir/Task?code={TASK_CODES}|{RECONCILE}&status=requested"

    def get(who: str, path: str) -> Any:
        return web.get(path, headers={"Authorization": f"Bearer {who}", "Accept": "application/fhir+json"})

    tilleuls, parc = token(app, "ide.tilleuls", "infirmier", TILLEULS), token(app, "ide.parc", "infirmier", PARC)
    found = get(tilleuls, query)
    assert found.status_code == 200, found.get_data(as_text=True)
    (task,) = [e["resource"] for e in found.get_json()["entry"]]
    assert task["id"] == item["task_id"] and task["owner"] == {"reference": f"Organization/{TILLEULS_ORG}"}
    inputs = {i["type"]["coding"][0]["code"]: i for i in task["input"]}
    assert inputs["reason"]["valueString"] == item["reason"]
    assert inputs["integration-code"]["valueCoding"]["code"] == item["code"]
    text = found.get_data(as_text=True)
    for health in ("279035121518989", "PAT-TROIS", "DOMINIQUE", "DUPONT", "XDM/1.0"):
        assert health not in text
    # another establishment's staff: not in the search, not by id, not through _has
    assert get(parc, query).get_json().get("entry", []) == []
    assert get(parc, f"/fhir/Task/{item['task_id']}").status_code == 404
    assert get(tilleuls, f"/fhir/Task/{item['task_id']}").status_code == 200
    has = "/fhir/Organization?_has:Task:owner:status=requested"
    assert [e["resource"]["id"] for e in get(tilleuls, has).get_json()["entry"]] == [TILLEULS_ORG]
    assert get(parc, has).get_json().get("entry", []) == []
    # the same rule for any Task of no resident: one's own establishment's, not another's
    headers = {"Authorization": f"Bearer {tilleuls}", "Content-Type": "application/fhir+json"}
    for org, status in ((TILLEULS_ORG, 201), (PARC_ORG, 403)):
        todo = {"resourceType": "Task", "status": "requested", "intent": "order", "description": "Commander des gants",
                "owner": {"reference": f"Organization/{org}"}}
        assert web.post("/fhir/Task", json=todo, headers=headers).status_code == status
    assert len(get(tilleuls, "/fhir/Task?status=requested").get_json()["entry"]) == 2
    assert get(parc, "/fhir/Task?status=requested").get_json().get("entry", []) == []
    # the queue changes through dui mssante inbox, not through a FHIR write
    task["status"] = "completed"
    changed = web.put(f"/fhir/Task/{item['task_id']}", json=task,
                      headers={"Authorization": f"Bearer {tilleuls}", "Content-Type": "application/fhir+json"})
    assert changed.status_code == 403, changed.get_data(as_text=True)
    assert "dui mssante inbox" in changed.get_data(as_text=True)


# -- through a real IMAP server ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imap_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("inbox-pki"))


@pytest.fixture(scope="module")
def dovecot_server(imap_pki: Pki) -> Iterator[DovecotServer]:
    with running_dovecot(imap_pki) as server:
        yield server


@pytest.fixture
def dovecot(dovecot_server: DovecotServer) -> DovecotServer:
    """The module's Dovecot with an empty INBOX and no processed folder."""
    imap = dovecot_server.client()
    try:
        imap.delete('"DUI-traite"')
        imap.select("INBOX")
        _, found = imap.search(None, "ALL")
        if found and found[0]:
            imap.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
            imap.expunge()
    finally:
        imap.logout()
    return dovecot_server


def _uids(server: DovecotServer, folder: str) -> int:
    imap = server.client()
    try:
        status, count = imap.select(f'"{folder}"', readonly=True)
        return int(count[0]) if status == "OK" else 0
    finally:
        imap.logout()


@pytest.mark.conformance
def test_a_round_trip_through_dovecot(app: Flask, demo: FhirClient, dovecot: DovecotServer, imap_pki: Pki,
                                      tmp_path: Path) -> None:
    svc: Services = app.extensions["dui"]
    settings = svc.settings
    svc.settings = settings.with_(mssante=MssanteSettings(
        imap_url=dovecot.imaps_url, sender=MAILBOX, cert=str(imap_pki.client_cert), key=str(imap_pki.client_key),
        ca=str(imap_pki.ca_cert), timeout=5.0))
    try:
        dovecot.deliver(message(fludr_for(2), notify=False).as_bytes(policy=email_policy.SMTP))
        assert worker(app).startswith("dui worker: MSSanté inbox: 1 filed, 0 queued")
        assert len(search(demo, f"DocumentReference?subject=Patient/{RESIDENT}&format=urn:asip:ci-sis:fludr:2017")) == 1
        assert _uids(dovecot, "INBOX") == 0 and _uids(dovecot, "DUI-traite") == 1
        assert worker(app) == ("dui worker: MSSanté inbox: 0 filed, 0 queued, 0 acknowledgement(s), "
                               "0 duplicate(s), 0 error(s)")
        assert rows(app, mssante_received)[0]["mdn_state"] is None  # none was asked for
    finally:
        svc.settings = settings
