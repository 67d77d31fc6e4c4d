"""Receiving MSSanté mail (docs/mssante.md, "Receiving"): the establishment's mailbox, polled by ``dui worker``.

``poll`` reads the messages after the stored cursor (``mssante_mailbox``: folder, UIDVALIDITY, last UID; a changed
UIDVALIDITY reads the folder again from its start, and the dedupe below makes that harmless) and takes each one
in a unit of work of its own (``receive``):

1. **Once.** The message is recorded in ``mssante_received`` by ``INSERT ... ON CONFLICT DO NOTHING`` on its
   Message-ID, which the database keeps UNIQUE: a message already there (a second poll, a second worker, a
   message moved back) is left alone. Never check-then-insert.
2. **Read.** ``mssante.parse_message`` (size, part, nesting and attachment caps), then:
   - an MDN answers a message sent from here: ``sending.acknowledge`` records it on the message and the document;
   - otherwise each IHE XDM archive is read with ``mssante.read_xdm`` (a hostile archive is refused with its
     reason) and each CDA document is **matched** on a resident by its INS (``match``), then filed on her by
     ``inbound.file_cda``, as the system, with identity vigilance on birth date and names; a FLUDR's items join
     the record. All the message's documents are filed, or none (a savepoint).
3. **Outcome.** Filed; or queued for a person (``dui.messaging.inbox``) with the MSSanté integration code: INS
   unknown 902, INS missing 903, birth date or names not the resident's 904, INS incomplete or malformed 905, and
   900 for the rest (no archive, a refused archive or message, an unreadable CDA, several residents holding the
   INS, documents naming several residents: UNCONFIRMED, 900's label is not in our sources). An acknowledgement
   of a message not sent from here is queued too, without a code. Nothing is dropped silently.
4. **Answer.** When the message asks for one (``Disposition-Notification-To``), an MDN (``mssante.build_mdn``):
   ``processed``, or ``processed/error`` with the code. It is built now, sealed in the row (its subject names
   the patient) and sent after commit by the outbox (``mssante.mdn`` jobs, ``deliver_mdn``); when sending is not
   configured the row says the MDN could not be sent, and the dead job can be retried once it is.

Then, after commit, the message is marked processed on the server (``\\Seen``, moved to the processed folder),
and only then is the cursor moved past it: a crash in between fetches it again next time, as a duplicate.

Logs hold Message-IDs, UIDs, codes and counts only: subjects, bodies, names and INS are health data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dui import __version__ as dui_version
from dui.audit import trail
from dui.audit.trail import AuditEntry
from dui.db import is_postgresql
from dui.documents import inbound
from dui.documents.received import read_cda
from dui.documents.received_model import INS_OIDS
from dui.errors import DuiError, Invalid, TooLarge, Unprocessable
from dui.fhir.interactions.base import FhirContext
from dui.fhir.search.plan import parse_search
from dui.messaging import inbox, sending
from dui.messaging.content import Document, Unreadable, cda_documents, one_line
from dui.messaging.inbox import bodies_of, session_of
from dui.messaging.tables import mssante_mailbox, mssante_received
from dui.metrics.counters import MSSANTE_RECEIVE, count_call
from dui.outbox import queue
from dui.outbox.queue import Job
from dui.outbox.runner import Outcome, UnitOfWork, delivered, permanent, transient
from ins import NirError, parse_matricule
from mssante import (
    Cursor,
    Fetched,
    Incoming,
    IntegrationCode,
    MailReceiver,
    MailSender,
    MdnError,
    MessageError,
    MessageRefused,
    MssanteError,
    Permanent,
    Transient,
    TransportError,
    build_mdn,
    parse_mdn,
    parse_message,
)

logger = logging.getLogger(__name__)

MDN_KIND = "mssante.mdn"
MDN = "mssante_received.mdn"  # what an MDN's seal is bound to (with the row id)
DEFAULT_FOLDER = "INBOX"
VIGILANCE = "ClinicalDocument.recordTarget.patientRole.patient"  # where inbound.file_cda places a traits mismatch


@dataclass
class PollReport:
    """One poll: messages fetched, and what became of them. ``failure``: why the poll stopped early (the server
    down or refusing us, a message that could not be marked); ``permanent``: retrying will not help."""

    fetched: int = 0
    filed: int = 0
    queued: int = 0
    acknowledged: int = 0
    duplicates: int = 0
    errors: int = 0
    restarted: bool = False
    failure: str | None = None
    permanent: bool = False

    def line(self) -> str:
        text = (f"{self.filed} filed, {self.queued} queued, {self.acknowledged} acknowledgement(s), "
                f"{self.duplicates} duplicate(s), {self.errors} error(s)")
        return text + (f"; stopped: {self.failure}" if self.failure else "")


class Unmatched(Exception):
    """The message cannot be filed on a resident by itself: its integration code and a one-line reason."""

    def __init__(self, code: IntegrationCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = one_line(reason)


# -- the poll ---------------------------------------------------------------------------------------------------


def poll(receiver: MailReceiver, work: UnitOfWork, context_of: Callable[[Session], FhirContext],
         clock: Callable[[], datetime], *, folder: str | None = None, limit: int = 20, rounds: int = 10
         ) -> PollReport:
    """Fetch and take the new messages of the mailbox, ``limit`` at a time, at most ``rounds`` times.
    ``context_of(session)``: the system's context in a unit of work. Never raises for a server problem: the
    report says it (``failure``)."""
    report = PollReport()
    named = getattr(receiver, "folder", None)  # ImapReceiver's; the in-memory twin has one folder
    folder = folder or (named if isinstance(named, str) and named else DEFAULT_FOLDER)
    for _ in range(rounds):
        with work(write=False) as session:
            cursor = load_cursor(session, folder)
        try:
            batch = receiver.fetch_new(cursor, limit=limit)
        except TransportError as exc:
            count_call(MSSANTE_RECEIVE, "error")
            report.failure, report.permanent = f"the mailbox cannot be read: {exc}", isinstance(exc, Permanent)
            logger.warning("mssante inbox not polled", extra={"error": type(exc).__name__})
            return report
        if batch.restarted:
            report.restarted = True
            logger.warning("mssante inbox: UIDVALIDITY changed, the folder is read from its start",
                           extra={"uidvalidity": batch.uidvalidity})
        if not batch.messages:
            if cursor is None or batch.restarted:
                with work(write=True) as session:
                    save_cursor(session, folder, batch.cursor, clock())
            return report
        for fetched in batch.messages:
            report.fetched += 1
            if not _take(receiver, work, context_of, clock, folder, batch.uidvalidity, fetched, report):
                return report
        if len(batch.messages) < limit:
            return report
    return report


def _take(receiver: MailReceiver, work: UnitOfWork, context_of: Callable[[Session], FhirContext],
          clock: Callable[[], datetime], folder: str, uidvalidity: int, fetched: Fetched, report: PollReport) -> bool:
    """Receive one message, mark it processed, move the cursor; False when the poll must stop."""
    try:
        with work(write=True) as session:
            outcome = receive(context_of(session), fetched, folder, uidvalidity, clock())
    except Exception as exc:  # a bug or the database: the message is queued with the reason, never lost
        logger.error("mssante message not processed", extra={"uid": fetched.uid, **_failure(exc)})
        report.errors += 1
        try:
            with work(write=True) as session:
                outcome = receive(context_of(session), fetched, folder, uidvalidity, clock(), failed=True)
        except Exception as again:
            logger.error("mssante message not queued either", extra={"uid": fetched.uid, **_failure(again)})
            report.failure = f"message uid {fetched.uid} could not be processed (see the log)"
            return False
    count_call(MSSANTE_RECEIVE, "duplicate" if outcome is None else outcome)
    if outcome is None:
        report.duplicates += 1
    elif outcome == "filed":
        report.filed += 1
    elif outcome == "acknowledged":
        report.acknowledged += 1
    else:
        report.queued += 1
    try:
        receiver.mark_processed(fetched.uid, uidvalidity)
    except TransportError as exc:  # taken, not moved: the next poll fetches it again, as a duplicate
        report.errors += 1
        report.failure = f"message uid {fetched.uid} taken but not marked processed: {exc}"
        logger.warning("mssante message not marked processed", extra={"uid": fetched.uid,
                                                                      "error": type(exc).__name__})
        return False
    with work(write=True) as session:
        save_cursor(session, folder, Cursor(uidvalidity, fetched.uid), clock())
    return True


def _failure(exc: BaseException) -> dict[str, str]:
    """What is logged of an unexpected error: its class and where it was raised, never its message (it may quote
    the message's content)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return {"error": type(exc).__name__, "at": where}


# -- one message ------------------------------------------------------------------------------------------------


def receive(ctx: FhirContext, fetched: Fetched, folder: str, uidvalidity: int, now: datetime, *,
            failed: bool = False) -> str | None:
    """Take one message in the caller's transaction: its outcome (``filed``, ``queued``, ``acknowledged``), or
    None when it was received before. ``failed``: a first attempt raised; queue it (code 900) without reading it."""
    incoming: Incoming | None = None
    problem: str | None = None
    if fetched.data is None:
        problem = (f"the message ({fetched.size} bytes) is larger than the receiver's limit: it was not downloaded; "
                   "read it in the mailbox's processed folder")
    elif failed:
        problem = "the message could not be processed (an internal error, in the log at this Message-ID)"
    else:
        try:
            incoming = parse_message(fetched.data)
        except MessageRefused as exc:
            problem = f"the message is refused: {exc.reason}"
    message_id = _key((incoming.message_id if incoming else None) or fetched.message_id, fetched, uidvalidity)
    session = session_of(ctx)
    received_id = _claim(session, message_id, folder, uidvalidity, fetched.uid, now)
    if received_id is None:
        logger.info("mssante message already received", extra={"message_id": message_id, "uid": fetched.uid})
        return None
    if problem is not None or incoming is None:
        return _queue(ctx, received_id, message_id, incoming, fetched, IntegrationCode.ERROR_900,
                      problem or "unreadable", now)
    if incoming.is_mdn:
        return _acknowledgement(ctx, received_id, message_id, incoming, fetched, now)
    try:
        documents = cda_documents(incoming)
        with ctx.repo.savepoint():  # every document of the message, or none
            filed = _file(ctx, documents)
    except Unreadable as exc:
        return _queue(ctx, received_id, message_id, incoming, fetched, IntegrationCode.ERROR_900, exc.reason, now)
    except Unmatched as exc:
        return _queue(ctx, received_id, message_id, incoming, fetched, exc.code, exc.reason, now)
    docref_ids = [f.reference.id for _, f in filed]
    _outcome(session, received_id, "filed", docref_ids=json.dumps(docref_ids))
    for patient_id, one in filed:
        trail.record(session, AuditEntry("mssante-receive", "success", ctx.actor, "DocumentReference",
                                         one.reference.id, detail="filed" if one.created else "filed already",
                                         count=one.items, patients=(patient_id,)), now)
    _answer(ctx, received_id, incoming, None, now)
    logger.info("mssante message filed", extra={"message_id": message_id, "uid": fetched.uid,
                                                "documents": len(docref_ids)})
    return "filed"


def _file(ctx: FhirContext, documents: list[Document]) -> list[tuple[str, inbound.Filed]]:
    residents = [match(ctx, d.data) for d in documents]
    if len(set(residents)) > 1:
        raise Unmatched(IntegrationCode.ERROR_900, "one patient per message: its documents name several residents")
    filed = []
    for document, patient_id in zip(documents, residents, strict=True):
        try:
            filed.append((patient_id, inbound.file_cda(ctx, document.data, patient_id=patient_id)))
        except Unprocessable as exc:
            if any(e.startswith(VIGILANCE) for i in exc.issues for e in i.expression):
                raise Unmatched(IntegrationCode.INS_TRAITS_MISMATCH, "identity vigilance: the resident holding the "
                                "document's INS does not have its birth date or names") from None
            raise Unmatched(IntegrationCode.ERROR_900, f"the document cannot be filed: {exc.message}") from None
        except DuiError as exc:
            raise Unmatched(IntegrationCode.ERROR_900, f"the document cannot be filed: {exc.message}") from None
    return filed


def match(ctx: FhirContext, xml: bytes) -> str:
    """The id of the resident a received CDA names by its INS; ``Unmatched`` with the integration code."""
    try:
        named = read_cda(xml).patient
    except (Invalid, TooLarge, Unprocessable) as exc:
        raise Unmatched(IntegrationCode.ERROR_900, f"the CDA document cannot be read: {exc.message}") from None
    if not named.ins or not named.ins_oid:
        if any(i.root in INS_OIDS for i in named.ids):
            raise Unmatched(IntegrationCode.INS_INCOMPLETE, "the document's INS has no matricule (an id with an INS "
                            "OID and no extension)")
        raise Unmatched(IntegrationCode.INS_MISSING, "the document names its patient without an INS")
    try:
        parse_matricule(named.ins)
    except NirError as exc:  # its message never repeats the value
        raise Unmatched(IntegrationCode.INS_INCOMPLETE, f"the document's INS is malformed: {exc}") from None
    plan = parse_search("Patient", [("identifier", f"urn:oid:{named.ins_oid}|{named.ins}"), ("_count", "2")],
                        ctx.registry, ctx.settings.limits, strict=True)
    rids = ctx.repo.search(plan).rids
    if not rids:
        raise Unmatched(IntegrationCode.PATIENT_UNKNOWN, "no resident holds the document's INS")
    if len(rids) > 1:
        raise Unmatched(IntegrationCode.ERROR_900, "several residents hold the document's INS (a duplicate record "
                        "to resolve first)")
    return ctx.repo.fetch(rids)[0].id


def _acknowledgement(ctx: FhirContext, received_id: int, message_id: str, incoming: Incoming, fetched: Fetched,
                     now: datetime) -> str:
    assert fetched.data is not None
    try:
        disposition = parse_mdn(fetched.data)
    except MdnError as exc:
        return _queue(ctx, received_id, message_id, incoming, fetched, None,
                      f"an acknowledgement (MDN) that cannot be read: {exc}", now)
    if not sending.acknowledge(session_of(ctx), ctx.internal, disposition, now):
        return _queue(ctx, received_id, message_id, incoming, fetched, None,
                      "an acknowledgement (MDN) of a message not sent from here", now)
    _outcome(session_of(ctx), received_id, "acknowledged")
    trail.record(session_of(ctx), AuditEntry("mssante-receive", "success", ctx.actor, detail="acknowledgement"), now)
    logger.info("mssante acknowledgement received", extra={"message_id": message_id, "uid": fetched.uid,
                                                           "original": disposition.original_message_id})
    return "acknowledged"


def _queue(ctx: FhirContext, received_id: int, message_id: str, incoming: Incoming | None, fetched: Fetched,
           code: IntegrationCode | None, reason: str, now: datetime) -> str:
    recipients = [*(incoming.to if incoming else ()), ctx.settings.mssante.sender or ""]
    item = inbox.enqueue(ctx, message_id=message_id, received_at=now, sender=incoming.sender if incoming else "",
                         recipients=recipients, code=code, reason=reason, raw=fetched.data)
    _outcome(session_of(ctx), received_id, "queued", inbox_id=item.id)
    if incoming is not None and code is not None:
        _answer(ctx, received_id, incoming, code, now)
    logger.info("mssante message queued", extra={"message_id": message_id, "uid": fetched.uid, "inbox": item.id,
                                                 "code": item.code})
    return "queued"


# -- the acknowledgement we answer ------------------------------------------------------------------------------


def _answer(ctx: FhirContext, received_id: int, incoming: Incoming, code: IntegrationCode | None,
            now: datetime) -> None:
    """The MDN the message asked for, built now, sealed in its row, sent after commit by the outbox."""
    if not incoming.notification_to or incoming.is_mdn:
        return
    session = session_of(ctx)
    ours = ctx.settings.mssante.sender or next(iter(incoming.to), "")
    if not ours:
        _mdn_state(session, received_id, "unsent", "no mailbox to answer from (DUI_MSSANTE_FROM)")
        return
    try:
        mdn = build_mdn(incoming, sender=ours, final_recipient=ours, reporting_ua=f"DUI; {dui_version}", error=code,
                        date=now)
    except MessageError as exc:
        _mdn_state(session, received_id, "unsent", f"the acknowledgement cannot be built: {exc}")
        return
    sealed = bodies_of(ctx).seal(MDN, received_id, 1, mdn.as_bytes(policy=email_policy.SMTP))
    session.execute(update(mssante_received).where(mssante_received.c.id == received_id).values(
        mdn=sealed, mdn_state="queued", mdn_detail=str(code.value) if code is not None else "processed"))
    key = f"mdn {incoming.message_id or received_id}"[:256]
    queue.enqueue(session, MDN_KIND, f"mssante_received/{received_id}", key, now)


def deliver_mdn(ctx: FhirContext, sender: Callable[[], MailSender], job: Job) -> Outcome:
    """Send the MDN of the job's received message; record what became of it on the row."""
    session = session_of(ctx)
    received_id = int(job.target.removeprefix("mssante_received/"))
    row = session.execute(select(mssante_received.c.mdn).where(mssante_received.c.id == received_id)).first()
    if row is None or row.mdn is None:
        return permanent("no acknowledgement to send (sent already, or the row is gone)")
    data = bodies_of(ctx).open(MDN, received_id, 1, row.mdn)
    assert data is not None
    message = BytesParser(policy=email_policy.SMTP).parsebytes(data)
    try:
        result = sender().send(message)
    except DuiError as exc:  # sending is not configured: said on the row; `dui outbox retry` once it is
        _mdn_state(session, received_id, "unsent", exc.message)
        return permanent(exc.message[:200])
    except Transient as exc:
        _mdn_state(session, received_id, "queued", f"retrying: {exc}")
        return transient(str(exc)[:200])
    except (Permanent, MssanteError) as exc:
        _mdn_state(session, received_id, "unsent", f"refused: {exc}")
        return permanent(str(exc)[:200])
    if result.refused:
        codes = ", ".join(str(c) for c in sorted(set(result.refused.values())))
        _mdn_state(session, received_id, "unsent", f"the MSSanté server refused the recipient ({codes})")
        return permanent(f"the MSSanté server refused the recipient ({codes})")
    session.execute(update(mssante_received).where(mssante_received.c.id == received_id).values(
        mdn=None, mdn_state="sent"))  # the MDN itself is not kept once sent
    return delivered(f"sent {result.message_id}")


# -- rows -------------------------------------------------------------------------------------------------------


def _claim(session: Session, message_id: str, folder: str, uidvalidity: int, uid: int, now: datetime) -> int | None:
    """Record the message as received; its row id, or None when it was received before (the UNIQUE Message-ID)."""
    insert = pg_insert if is_postgresql(session) else sqlite_insert
    values = {"message_id": message_id, "folder": folder, "uidvalidity": uidvalidity, "uid": uid,
              "received_at": now, "outcome": "queued"}  # the fate of a message nobody could read; set at the end
    found: int | None = session.execute(insert(mssante_received).values(**values).on_conflict_do_nothing(
        index_elements=["message_id"]).returning(mssante_received.c.id)).scalar()
    return found


def _outcome(session: Session, received_id: int, outcome: str, **values: Any) -> None:
    session.execute(update(mssante_received).where(mssante_received.c.id == received_id).values(
        outcome=outcome, **values))


def _mdn_state(session: Session, received_id: int, state: str, detail: str | None) -> None:
    session.execute(update(mssante_received).where(mssante_received.c.id == received_id).values(
        mdn_state=state, mdn_detail=one_line(detail, 200) if detail else None))


def _key(message_id: str | None, fetched: Fetched, uidvalidity: int) -> str:
    """The dedupe key: the Message-ID, or a digest of the message when it has none (or an unusable one)."""
    if message_id and len(message_id) <= 255:
        return message_id
    basis = fetched.data if fetched.data is not None else f"{uidvalidity}/{fetched.uid}/{fetched.size}".encode()
    return f"<sha256.{hashlib.sha256(basis).hexdigest()[:48]}@received.dui.invalid>"


def load_cursor(session: Session, folder: str) -> Cursor | None:
    row = session.execute(select(mssante_mailbox).where(mssante_mailbox.c.folder == folder)).mappings().first()
    return Cursor(int(row["uidvalidity"]), int(row["last_uid"])) if row is not None else None


def save_cursor(session: Session, folder: str, cursor: Cursor, now: datetime) -> None:
    insert = pg_insert if is_postgresql(session) else sqlite_insert
    values = {"folder": folder, "uidvalidity": cursor.uidvalidity, "last_uid": cursor.last_uid, "updated_at": now}
    session.execute(insert(mssante_mailbox).values(**values).on_conflict_do_update(
        index_elements=["folder"], set_={k: v for k, v in values.items() if k != "folder"}))
