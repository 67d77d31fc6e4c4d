"""``/api/residents/{id}/documents``, ``/api/documents/{id}/pdf``, ``/api/residents/{id}/dlu`` and ``/api/inbox``:
the resident's documents, their PDF, the DLU built now, and the MSSanté mail waiting for a person
(``dui.staff.documents``).

Documents are medical data: by default the health professionals read them, the médecin writes them. The PDF is
read as ``GET /fhir/Binary/{id}`` reads it (same authorization, scoping and audit), and served as
``application/pdf``.
"""

from __future__ import annotations

from dui.staff import documents
from dui.web.staff import document_schemas as schemas
from dui.web.staff.edge import Answer, Use, endpoint
from dui.web.staff.schemas import PageQuery

PDF = "application/pdf"


@endpoint("GET", "/residents/<rid>/documents", name="documents", summary="A resident's documents", tag="Documents",
          query=PageQuery, answer=schemas.DocumentPage)
def documents_of(use: Use, rid: str) -> Answer:
    """The latest first: kind (DLU, FLUDT, FLUDR, N1, other), type, date, author, status (a replaced DLU is
    ``superseded``), whether the record changed since it was built, its DMP state, its MSSanté sends, its PDF."""
    items, following = documents.documents_of(use.record, rid, use.query.get("cursor"), use.query["limit"])
    return Answer({"items": items, "next_cursor": following})


@endpoint("GET", "/documents/<did>/pdf", name="document-pdf", summary="The PDF of a document", tag="Documents",
          produces=PDF)
def document_pdf(use: Use, did: str) -> Answer:
    """The PDF rendering of a structured document (DLU, FLUDT) or the PDF of an attached one, as ``GET
    /fhir/Binary/{id}`` serves it. 404 for a document that has none (a CDA received without a PDF)."""
    data, kind = documents.pdf_of(use.record, did)
    return Answer(data, content_type=PDF, headers={"Content-Disposition": f'inline; filename="{kind}-{did}.pdf"'})


@endpoint("POST", "/residents/<rid>/dlu", name="refresh-dlu", summary="Build or refresh a resident's DLU now",
          tag="Documents", body=schemas.DluIn, answer=schemas.DluOut, writes=True)
def refresh_dlu(use: Use, rid: str) -> Answer:
    """``built``: true when a new DLU was built now (the record changed since the one in force, or there was
    none), false when the one in force shows the record as it is. The body is ``{}`` or ``{"force": true}``."""
    document, built = documents.refresh_dlu(use.record, rid, use.body["force"])
    return Answer({"built": built, "document": document})


@endpoint("GET", "/inbox", name="inbox", summary="MSSanté mail waiting to be filed", tag="Documents",
          query=PageQuery, answer=schemas.InboxPage)
def inbox(use: Use) -> Answer:
    """The mail received by the establishment that the worker could not file on a resident by itself, oldest
    first: when, the sender's domain, why it waits, the MSSanté integration code. Never the document: file it on
    the right resident (``assign``), or reject it."""
    items, following = documents.inbox_page(use.record, use.query.get("cursor"), use.query["limit"])
    return Answer({"items": items, "next_cursor": following})


@endpoint("POST", "/inbox/<iid>/assign", name="inbox-assign", summary="File received mail on a resident",
          tag="Documents", body=schemas.AssignIn, answer=schemas.InboxItemOut, writes=True)
def inbox_assign(use: Use, iid: str) -> Answer:
    """``dui mssante inbox assign``: the message's documents filed on the resident, after identity vigilance (her
    birth date and names must be the document's; a document naming an INS goes only to the resident holding it),
    a FLUDR's items added to her record. 422 and nothing filed otherwise; 409 if decided already."""
    done = documents.assign(use.record, iid, use.body["resident_id"])
    use.patients.add(use.body["resident_id"])
    return Answer(done)


@endpoint("POST", "/inbox/<iid>/reject", name="inbox-reject", summary="Reject received mail", tag="Documents",
          body=schemas.RejectIn, answer=schemas.InboxItemOut, writes=True)
def inbox_reject(use: Use, iid: str) -> Answer:
    """``dui mssante inbox reject``: closed without filing anything, with the reason. 409 if decided already."""
    return Answer(documents.reject(use.record, iid, use.body["reason"]))
