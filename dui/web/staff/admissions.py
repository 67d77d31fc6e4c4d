"""``/api/admissions``, ``/api/residents/{id}/discharge`` and ``/death`` (``dui.staff.admissions``), and the projet
personnalisé, ``/api/residents/{id}/projet`` (``dui.staff.projet``)."""

from __future__ import annotations

from dui.staff import admissions, projet
from dui.web.staff import admission_schemas as schemas
from dui.web.staff.edge import Answer, Use, endpoint


@endpoint("POST", "/admissions", name="admit-resident", summary="Admit a resident: identity (INSi), stay and room, "
          "médecin traitant, personne de confiance, DMP information", tag="Admissions", body=schemas.AdmissionIn,
          answer=schemas.AdmissionOut, status=201, writes=True, etag=True)
def admit(use: Use) -> Answer:
    """For the establishment's administration (administratif, direction where the policy lets it write identity
    data). One unit of work: the record (identity provisoire), the stay in the room (Encounter in progress), the
    médecin traitant (an existing Practitioner by id, or one made from name and RPPS), the personne de confiance,
    the DMP information and opposition; then INSi by traits (`insi`, default true): found, the identity is
    récupérée; not found or unreachable, it stays provisoire and `insi` says why. If any part is refused, nothing
    is written.

    Potential duplicates (RNIV) are searched first among the establishment's residents: a `certain` or `probable`
    one refuses the admission with 409 naming them, unless `confirm_new: true` (staff checked they are other
    people); `possible` ones come back in `duplicates`. An INS that INSi returns and another resident carries is
    a 409 too. A room that is not one of the establishment's is a 422; a room occupied by a current stay a 409.
    The GIR is recorded afterwards with `POST /api/residents/{id}/evaluations/aggir`. The ETag is the Patient's
    version."""
    done = admissions.admit(use.record, use.actor, use.now, use.body)
    body = {"resident": done.resident, "stay": done.stay, "insi": done.insi, "duplicates": done.duplicates,
            "created": done.created}
    return Answer(body, 201, etag=f'W/"{done.version}"',
                  headers={"Location": f"/api/residents/{done.resident['id']}"})


@endpoint("POST", "/residents/<rid>/discharge", name="discharge-resident", summary="Record a discharge: the stay "
          "finished, the room freed", tag="Admissions", body=schemas.DischargeIn, answer=schemas.StayEndedOut,
          writes=True)
def discharge(use: Use, rid: str) -> Answer:
    """The current stay in the establishment ends on `date` (not before the admission, not in the future), with the
    destination as its TDDUI exit mode; its room is free again. A resident with no current stay: 409."""
    return Answer(admissions.discharge(use.record, use.actor, use.now, rid, use.body["date"],
                                       use.body["destination"]))


@endpoint("POST", "/residents/<rid>/death", name="record-death", summary="Record a death: deceasedDateTime, the "
          "stay finished", tag="Admissions", body=schemas.DeathIn, answer=schemas.StayEndedOut, writes=True)
def death(use: Use, rid: str) -> Answer:
    """For the administration or a physician. `Patient.deceasedDateTime`, and the current stay finished at that
    time (exit mode "Décès"). A death recorded already: 409; a time before the admission or after now: 422."""
    return Answer(admissions.record_death(use.record, use.actor, use.now, rid, use.body["deceased_at"]))


@endpoint("GET", "/residents/<rid>/projet", name="projet", summary="The projet personnalisé: goals and reviews",
          tag="Projet personnalisé", answer=schemas.ProjetOut, etag=True)
def read_projet(use: Use, rid: str) -> Answer:
    """The TDDUI CarePlan `tddui-careplan-projet-personnalise`, its goals (`tddui-goal-objectif`) and reviews
    (`tddui-task-bilan`). The ETag is the projet's version: send it back as If-Match with a change."""
    view, version = projet.read(use.record, use.actor, rid)
    return Answer(view, etag=f'W/"{version}"')


@endpoint("POST", "/residents/<rid>/projet", name="write-projet-goals", summary="Write goals of the projet "
          "personnalisé (creating it)", tag="Projet personnalisé", body=schemas.ProjetIn, answer=schemas.ProjetOut,
          status=201, writes=True, etag=True, if_match=True)
def write_projet(use: Use, rid: str) -> Answer:
    """For the care team and physicians. Creates the resident's projet with these goals, or adds them to her projet.
    With If-Match (the ETag read), a projet changed meanwhile is refused with 412."""
    view, version = projet.write_goals(use.record, use.actor, use.now, rid, use.body["goals"],
                                       use.body.get("title"), use.if_match)
    return Answer(view, 201, etag=f'W/"{version}"')


@endpoint("POST", "/residents/<rid>/projet/reviews", name="review-projet", summary="Record a review (bilan) of the "
          "projet personnalisé", tag="Projet personnalisé", body=schemas.ReviewIn, answer=schemas.ProjetOut,
          status=201, writes=True, etag=True, if_match=True)
def review_projet(use: Use, rid: str) -> Answer:
    """Its date, its text, each goal's status (a goal achieved or unattainable is closed), the next review's date.
    With If-Match (the ETag read), a projet changed meanwhile is refused with 412."""
    view, version = projet.review(use.record, use.actor, use.now, rid, use.body, use.if_match)
    return Answer(view, 201, etag=f'W/"{version}"')
