"""``/api/residents``: "my residents now" and one resident at a glance (``dui.staff.residents``)."""

from __future__ import annotations

from dui.staff import residents
from dui.web.staff import schemas
from dui.web.staff.edge import Answer, Use, endpoint


@endpoint("GET", "/residents", name="residents-now", summary="My residents now, with what needs attention",
          tag="Residents", query=schemas.ResidentsQuery, answer=schemas.ResidentPage)
def residents_now(use: Use) -> Answer:
    """The residents present in the establishment (or in one unit), a page at a time, each with her active flags
    (fall alerts, risks), whether vital signs are missing for 7 days, and the state of her DLU."""
    items, following = residents.residents_now(use.record, use.session, use.now, use.query.get("unit"),
                                               use.query.get("cursor"), use.query["limit"])
    return Answer({"items": items, "next_cursor": following})


@endpoint("GET", "/residents/<rid>", name="resident", summary="One resident at a glance", tag="Residents",
          answer=schemas.ResidentOut, etag=True)
def resident(use: Use, rid: str) -> Answer:
    """Identity, stay and room, flags, latest vital signs, DLU state; allergies, diagnoses and treatments when the
    caller's role may read them (an aide-soignant gets no ``conditions``). The ETag is the Patient's version."""
    view, version = residents.resident(use.record, use.session, use.now, rid)
    return Answer(view, etag=f'W/"{version}"')
