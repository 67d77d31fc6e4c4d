"""``/api/residents/{id}/transfers``: a transfer to hospital in one call, the resident's transfers, her return
(``dui.staff.transfers``).

Who may is the policy's, applied by the FHIR interactions the use case runs: putting the stay on leave (update
Encounter), building the FLUDT and the DLU (reading documents), the transfer's Task; by default the nurses and the
médecin. Queuing the documents for the hospital's MSSanté address needs the right to send documents out (update
DocumentReference, the médecin by default): a nurse's transfer builds them, and the answer says ``not-permitted``.
"""

from __future__ import annotations

from dui.staff import transfers
from dui.web.staff import document_schemas as schemas
from dui.web.staff.edge import Answer, Use, endpoint
from dui.web.staff.schemas import PageQuery


@endpoint("POST", "/residents/<rid>/transfers", name="transfer-to-hospital", summary="Transfer a resident to "
          "hospital: FLUDT, DLU, MSSanté, the stay on leave", tag="Transfers", body=schemas.TransferIn,
          answer=schemas.TransferOut, status=201, writes=True, etag=True)
def transfer(use: Use, rid: str) -> Answer:
    """In one unit of work: her stay goes on leave (Encounter ``onleave``, her room ``reserved``: she stays a
    resident, her place is kept), the FLUDT is built with the motif and the destination, the DLU refreshed, both
    queued for the hospital's MSSanté address when MSSanté is configured and the caller may send documents out
    (``mssante``: ``queued`` with the outbox jobs, else ``not-configured``, ``not-permitted`` or ``no-address``:
    the documents are built all the same, print them from their ``pdf`` link), and the transfer recorded (a
    Task, ``in-progress``). 409 if she is at the hospital already; 422 if she has no stay in progress."""
    done = transfers.start(use.record, use.actor, use.now, rid, use.body)
    return Answer(done, 201, etag=f'W/"{done["version"]}"')


@endpoint("GET", "/residents/<rid>/transfers", name="transfers", summary="A resident's transfers to hospital",
          tag="Transfers", query=PageQuery, answer=schemas.TransferPage)
def transfers_of(use: Use, rid: str) -> Answer:
    """The latest first, each with where the MSSanté sends of its documents stand (queued, sent, processed by the
    hospital, error...) and the FLUDR that came back."""
    items, following = transfers.transfers_of(use.record, rid, use.query.get("cursor"), use.query["limit"])
    return Answer({"items": items, "next_cursor": following})


@endpoint("POST", "/residents/<rid>/transfers/<tid>/return", name="return-from-hospital", summary="Record a "
          "resident's return from hospital", tag="Transfers", body=schemas.ReturnIn, answer=schemas.TransferOut,
          writes=True, etag=True)
def return_from_hospital(use: Use, rid: str, tid: str) -> Answer:
    """The transfer completed, her stay in progress again and her room hers. ``fludr``: the FLUDR the hospital
    sent back, once filed (MSSanté, ``dui documents import``): its exit diagnoses, treatments and devices are in
    her record already; it is linked to the transfer (``fludr.items`` says how many resources it gave). 409 if she
    came back already."""
    done = transfers.finish(use.record, use.now, rid, tid, use.body)
    return Answer(done, etag=f'W/"{done["version"]}"')
