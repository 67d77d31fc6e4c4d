"""``/api/residents/{id}/prescriptions``, ``/api/prescriptions``, ``/api/rounds`` and ``/api/administrations``:
prescriptions, the administration plan of a round, and the doses recorded (``dui.staff.medications``,
``dui.staff.administrations``).

Who may do what is the policy's (``dui.auth.policy``), applied by the FHIR interactions the use cases run: a médecin
prescribes and stops; an infirmier (or a médecin) reads the plan, records the doses and double-checks them; an
aide-soignant reads no medication (403).
"""

from __future__ import annotations

from typing import Any

from dui.errors import Conflict
from dui.staff import administrations, medications
from dui.web.staff import medication_schemas as schemas
from dui.web.staff import problems
from dui.web.staff.edge import Answer, Use, endpoint


class DoseRecorded(Conflict):
    """409 whose problem carries the administration as it stands (``administration``): the client shows the first
    recording rather than its own."""

    def __init__(self, err: administrations.DoseConflict) -> None:
        super().__init__(err.message, issues=err.issues, code=err.code, patients=err.patients)
        self.problem: dict[str, Any] = {**problems.error_problem(err, self.status),
                                        "administration": err.administration}


@endpoint("POST", "/residents/<rid>/prescriptions", name="prescribe", summary="Prescribe a medication (médecin)",
          tag="Medications", body=schemas.PrescriptionIn, answer=schemas.PrescriptionOut, status=201, writes=True,
          etag=True)
def prescribe(use: Use, rid: str) -> Answer:
    """The drug (ATC code and label, or a label only), the prescription as written, one dose per round (matin 08:00,
    midi 12:00, soir 18:00, coucher 21:00), the dates, "si besoin". Stored as a FHIR MedicationRequest whose Dosages
    are timed with the R4 EventTiming codes of the rounds (MORN, NOON, EVE, HS). A médicament à risque (anticoagulant,
    insuline, opioïde...) is marked ``high_risk``: its doses are double-checked."""
    prescription = medications.prescribe(use.record, use.actor, use.now, rid, use.body)
    return Answer(medications.view(prescription), 201, etag=f'W/"{prescription.version}"')


@endpoint("GET", "/residents/<rid>/prescriptions", name="prescriptions", summary="A resident's active prescriptions",
          tag="Medications", answer=schemas.PrescriptionList)
def prescriptions(use: Use, rid: str) -> Answer:
    use.record.read("Patient", rid)
    return Answer({"items": [medications.view(p) for p in medications.prescriptions_of(use.record, [rid])]})


@endpoint("GET", "/prescriptions/<pid>", name="prescription", summary="One prescription", tag="Medications",
          answer=schemas.PrescriptionOut, etag=True)
def prescription(use: Use, pid: str) -> Answer:
    resource, version = use.record.read("MedicationRequest", pid)
    return Answer(medications.view(medications.parse(resource, version)), etag=f'W/"{version}"')


@endpoint("POST", "/prescriptions/<pid>/stop", name="stop-prescription", summary="Stop a prescription (médecin)",
          tag="Medications", body=schemas.StopIn, answer=schemas.PrescriptionOut, writes=True, etag=True,
          if_match=True)
def stop_prescription(use: Use, pid: str) -> Answer:
    """From now: its doses of the rounds to come leave the plan; those recorded stay. The body is ``{}`` or gives
    the reason. 409 when it is not active."""
    stopped = medications.stop(use.record, use.now, pid, use.body.get("reason"), use.if_match)
    return Answer(medications.view(stopped), etag=f'W/"{stopped.version}"')


@endpoint("GET", "/rounds", name="round-plan", summary="The administration plan of a round", tag="Medications",
          query=schemas.RoundQuery, answer=schemas.RoundPlanOut)
def round_plan(use: Use) -> Answer:
    """For the residents present (of a unit, with ``unit``), each dose due at the round of the date, with its state:
    pending, awaiting-check, given, refused, not-given (with the reason); and for a médicament à risque whether the
    double-check is done. Prescriptions without rounds (free text only) are listed apart, to be read."""
    return Answer(administrations.round_plan(use.record, use.query["date"], use.query["round"],
                                             use.query.get("unit")))


@endpoint("POST", "/administrations", name="record-administration", summary="Record a dose: given, refused, not "
          "given", tag="Medications", body=schemas.AdministrationIn, answer=schemas.AdministrationOut, status=201,
          writes=True, etag=True)
def record_administration(use: Use) -> Answer:
    """One dose of a prescription at a round, recorded once: a second recording of the same dose is a 409 whose
    problem shows the first (``administration``). A dose of a médicament à risque recorded as given awaits the
    double-check of another nurse (``state`` awaiting-check). A round's doses are recorded from one hour before
    it."""
    body = use.body
    reason = body.get("reason") or {}
    given = administrations.Given(body["prescription_id"], body["date"], body["round"], body["outcome"],
                                  reason.get("code"), reason.get("text"), body.get("note"))
    try:
        administration, version = administrations.record_dose(use.record, use.actor, use.now, given)
    except administrations.DoseConflict as err:
        raise DoseRecorded(err) from None
    return Answer(administrations.view(administration, version), 201, etag=f'W/"{version}"')


@endpoint("POST", "/administrations/<aid>/double-check", name="double-check", summary="Double-check a dose of a "
          "médicament à risque", tag="Medications", answer=schemas.AdministrationOut, writes=True, etag=True)
def double_check(use: Use, aid: str) -> Answer:
    """By another nurse than the one who recorded the dose (422 for the same one); 409 when the dose awaits no
    check (checked already, refused or not given)."""
    try:
        administration, version = administrations.double_check(use.record, use.actor, aid)
    except administrations.DoseConflict as err:
        raise DoseRecorded(err) from None
    return Answer(administrations.view(administration, version), etag=f'W/"{version}"')
