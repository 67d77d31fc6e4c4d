"""The staff API's payloads for documents (the DLU, the inbox, sendings) and for hospital transfers, which send them
(``dui.web.staff.schemas`` for the rules every schema follows).
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from dui.errors import DuiError
from dui.messaging import sending
from dui.web.staff.problems import Bilingual
from dui.web.staff.schemas import ID, REASON_TEXT, TEXT_LONG, TEXT_SHORT, In

ITEMS_TEXT = validate.Length(min=1, max=200)


def _mssante_address(value: str) -> None:
    try:
        address = sending.normalized_address(value)
    except DuiError:
        raise ValidationError(Bilingual("Not an e-mail address (name@domain)",
                                        "Adresse de messagerie invalide (nom@domaine)")) from None
    if sending.is_patient_mailbox(address):
        raise ValidationError(Bilingual("A patient's own mailbox (@patient.mssante.fr) is not a hospital's address",
                                        "Une boîte aux lettres de patient (@patient.mssante.fr) n'est pas l'adresse "
                                        "d'un hôpital"))


class HospitalIn(In):
    name = fields.String(validate=TEXT_SHORT, allow_none=True,
                         metadata={"description": "the hospital and its department: CH de Villefranche, urgences"})
    mssante = fields.String(validate=[validate.Length(max=254), _mssante_address], allow_none=True, metadata={
        "description": "the hospital's MSSanté address (an organisational mailbox): the FLUDT and the DLU go there"})

    @validates_schema
    def _named(self, data: dict[str, Any], **_: Any) -> None:
        if not (data.get("name") or data.get("mssante")):
            raise ValidationError(Bilingual("Name the hospital, or give its MSSanté address",
                                            "Indiquez l'hôpital ou son adresse MSSanté"), "name")


class TransferIn(In):
    hospital = fields.Nested(HospitalIn, required=True)
    reason = fields.String(required=True, validate=REASON_TEXT, metadata={"description": "le motif du transfert"})
    departed_at = fields.AwareDateTime(allow_none=True, metadata={
        "description": "when she left (ISO 8601 with offset); default: now; not in the future"})
    note = fields.String(validate=TEXT_LONG, allow_none=True, metadata={"description": "the nurse's comment (FLUDT)"})
    last_meal = fields.String(validate=TEXT_SHORT, allow_none=True, metadata={"description": "dernier repas"})
    devices = fields.List(fields.String(validate=ITEMS_TEXT), validate=validate.Length(max=20), load_default=list,
                          metadata={"description": "dispositifs, prothèses she leaves with (lunettes...)"})
    belongings = fields.List(fields.String(validate=ITEMS_TEXT), validate=validate.Length(max=20), load_default=list,
                             metadata={"description": "objets personnels she leaves with"})


class ReturnIn(In):
    returned_at = fields.AwareDateTime(allow_none=True, metadata={
        "description": "when she came back (ISO 8601 with offset); default: now"})
    fludr = fields.String(validate=ID, allow_none=True, metadata={
        "description": "the FLUDR the hospital sent back (a DocumentReference id, filed through MSSanté or dui "
                       "documents import); null or absent: none came back"})


class DluIn(In):
    force = fields.Boolean(load_default=False, metadata={
        "description": "a new version even when the record has not changed (who may write documents only)"})


class AssignIn(In):
    resident_id = fields.String(required=True, validate=ID, metadata={"description": "the resident to file it on"})


class RejectIn(In):
    reason = fields.String(required=True, validate=REASON_TEXT, metadata={
        "description": "why, in one line, without health data"})


class SendingOut(Schema):
    address = fields.String(required=True)
    state = fields.String(required=True, metadata={"description": "queued, sent, processed, error or refused"})
    when = fields.String(allow_none=True)
    detail = fields.String(allow_none=True)


class DocumentOut(Schema):
    id = fields.String(required=True)
    version = fields.Integer(required=True)
    kind = fields.String(required=True, metadata={"description": "DLU, FLUDT, FLUDR, N1 (a PDF attached) or other"})
    type = fields.String(allow_none=True, metadata={"description": "the LOINC code of the document"})
    title = fields.String(allow_none=True)
    date = fields.String(allow_none=True)
    author = fields.String(allow_none=True)
    status = fields.String(allow_none=True, metadata={"description": "current, superseded (a DLU replaced)..."})
    outdated = fields.Boolean(required=True, metadata={
        "description": "the record changed since it was built (a new DLU is on its way)"})
    dmp = fields.String(allow_none=True, metadata={
        "description": "queued, sent, masked, archived, deleted or refused; null: not sent to the DMP"})
    pdf = fields.String(allow_none=True, metadata={"description": "where to get its PDF; null: it has none"})
    sendings = fields.List(fields.Nested(SendingOut), required=True, metadata={"description": "MSSanté, by address"})


class DocumentPage(Schema):
    items = fields.List(fields.Nested(DocumentOut), required=True)
    next_cursor = fields.String(allow_none=True)


class DluOut(Schema):
    built = fields.Boolean(required=True, metadata={
        "description": "true: a new DLU was built now; false: the one in force shows the record as it is"})
    document = fields.Nested(DocumentOut, required=True)


class DeliveryOut(Schema):
    state = fields.String(required=True, metadata={
        "description": "queued (an outbox job), sent, processed, error, refused; not-configured (MSSanté settings "
                       "unset), not-permitted (the caller's role may not send documents out), no-address, not-sent"})
    job = fields.Integer(allow_none=True, metadata={"description": "the outbox job (dui outbox show)"})
    job_state = fields.String(allow_none=True)
    detail = fields.String(allow_none=True)


class TransferDocumentOut(Schema):
    id = fields.String(required=True)
    kind = fields.String(required=True)
    pdf = fields.String(required=True)
    mssante = fields.Nested(DeliveryOut, required=True)


class HospitalOut(Schema):
    name = fields.String(allow_none=True)
    mssante = fields.String(allow_none=True)


class FludrOut(Schema):
    id = fields.String(required=True)
    items = fields.Integer(allow_none=True, metadata={
        "description": "resources of the record read from it (exit diagnoses, treatments, devices)"})


class TransferOut(Schema):
    id = fields.String(required=True)
    version = fields.Integer(required=True)
    resident_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"description": "in-progress (at the hospital) or completed"})
    hospital = fields.Nested(HospitalOut, required=True)
    reason = fields.String(allow_none=True)
    note = fields.String(allow_none=True)
    departed_at = fields.String(allow_none=True)
    returned_at = fields.String(allow_none=True)
    stay_id = fields.String(allow_none=True)
    documents = fields.List(fields.Nested(TransferDocumentOut), required=True)
    mssante = fields.String(required=True, metadata={"description": "the documents' common MSSanté state, or mixed"})
    fludr = fields.Nested(FludrOut, allow_none=True)


class TransferPage(Schema):
    items = fields.List(fields.Nested(TransferOut), required=True)
    next_cursor = fields.String(allow_none=True)


class InboxItemOut(Schema):
    id = fields.String(required=True, metadata={"description": "the number in the queue (dui mssante inbox list)"})
    task_id = fields.String(required=True)
    received_at = fields.String(allow_none=True)
    sender_domain = fields.String(allow_none=True)
    code = fields.String(allow_none=True, metadata={
        "description": "MSSanté integration code: 902 INS unknown, 903 INS missing, 904 identity vigilance, 905 INS "
                       "malformed, 900 the rest; null: an acknowledgement"})
    code_label = fields.String(allow_none=True)
    reason = fields.String(allow_none=True, metadata={"description": "why it waits"})
    state = fields.String(required=True, metadata={"description": "pending, assigned or rejected"})
    resident_id = fields.String(allow_none=True)
    documents = fields.List(fields.String(), required=True, metadata={"description": "DocumentReferences filed"})
    note = fields.String(allow_none=True, metadata={"description": "the reason of a rejection"})


class InboxPage(Schema):
    items = fields.List(fields.Nested(InboxItemOut), required=True)
    next_cursor = fields.String(allow_none=True)
