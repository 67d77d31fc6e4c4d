"""``/api/residents/{id}/vital-signs``, ``/falls``, and ``/api/transmissions`` (``dui.staff.care``,
``dui.staff.transmissions``)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from dui.errors import NotFound
from dui.staff import care, transmissions
from dui.staff.record import version_of
from dui.web.staff import schemas
from dui.web.staff.edge import Answer, Use, endpoint


@endpoint("POST", "/residents/<rid>/vital-signs", name="record-vital-signs", summary="Record vital signs, weight, "
          "pain", tag="Care", body=schemas.VitalSignsIn, answer=schemas.RecordedOut, status=201, writes=True)
def record_vital_signs(use: Use, rid: str) -> Answer:
    """One Observation per measure (blood pressure as one panel). A value outside the plausibility limits is
    refused (422, the field named); a weight 5 kg or more away from one of the past week's is recorded with a
    warning."""
    done = care.record_vital_signs(use.record, use.actor, use.now, rid, use.body)
    return Answer({"ids": done.ids, "warnings": done.warnings}, 201)


@endpoint("POST", "/residents/<rid>/falls", name="declare-fall", summary="Declare a fall with its circumstances",
          tag="Care", body=schemas.FallIn, answer=schemas.RecordedOut, status=201, writes=True)
def declare_fall(use: Use, rid: str) -> Answer:
    """The fall as an Observation (SNOMED CT 1912002), its circumstances as components."""
    done = care.declare_fall(use.record, use.actor, use.now, rid, use.body)
    return Answer({"ids": done.ids, "warnings": done.warnings}, 201)


@endpoint("POST", "/residents/<rid>/transmissions", name="write-transmission", summary="Write a transmission "
          "ciblée (DAR)", tag="Transmissions", body=schemas.TransmissionIn, answer=schemas.TransmissionOut,
          status=201, writes=True, etag=True)
def write_transmission(use: Use, rid: str) -> Answer:
    """A target (la cible) and données, actions, résultats; stored as a Communication of the resident."""
    use.record.read("Patient", rid)
    communication, version = transmissions.write(use.record, use.actor, use.now, rid, use.body["target"], use.body)
    return Answer(transmissions.view(communication, version), 201, etag=f'W/"{version}"')


@endpoint("GET", "/transmissions", name="shift-transmissions", summary="The transmissions of a shift",
          tag="Transmissions", query=schemas.ShiftQuery, answer=schemas.TransmissionPage)
def shift_transmissions(use: Use) -> Answer:
    """Matin (07-14), après-midi (14-21) or nuit (21-07, named by the evening's date), in the establishment's time
    zone; optionally one resident's."""
    found, following = transmissions.read_shift(use.record, use.query["date"], use.query["shift"],
                                                ZoneInfo(use.settings.timezone), use.query.get("resident"),
                                                use.query.get("cursor"), use.query["limit"])
    items = [transmissions.view(c, version_of(c)) for c in found if transmissions.is_transmission(c)]
    return Answer({"items": items, "next_cursor": following})


@endpoint("GET", "/transmissions/<tid>", name="transmission", summary="One transmission", tag="Transmissions",
          answer=schemas.TransmissionOut, etag=True)
def transmission(use: Use, tid: str) -> Answer:
    communication, version = use.record.read("Communication", tid)
    if not transmissions.is_transmission(communication):
        raise NotFound(f"No transmission {tid}")
    return Answer(transmissions.view(communication, version), etag=f'W/"{version}"')


@endpoint("PATCH", "/transmissions/<tid>", name="complete-transmission", summary="Write the résultats of a "
          "transmission", tag="Transmissions", body=schemas.ResultsIn, answer=schemas.TransmissionOut,
          writes=True, etag=True, if_match=True)
def complete_transmission(use: Use, tid: str) -> Answer:
    """The next shift writes what came of it. With ``If-Match`` (the ETag read), a transmission changed meanwhile is
    refused with 412 rather than overwritten."""
    communication, version = transmissions.complete(use.record, tid, use.body["resultats"], use.if_match)
    return Answer(transmissions.view(communication, version), etag=f'W/"{version}"')
