"""Admitting a resident: a new record with a provisional identity, and the records it may duplicate.

At admission the identity is provisoire until INSi and an identity document say more
(``dui.residents.operations``). The RNIV asks to look for an existing record before creating one: the
admission answers the potential duplicates with the new record, for staff to check before going on.
Through FHIR, a plain ``POST Patient`` admits too (the write rules apply); ``Patient/$match`` finds the
duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dui.errors import Unprocessable
from dui.fhir.interactions.base import FhirContext
from dui.fhir.repository import ResourceVersion
from dui.residents import duplicates, mapping, provenance, rules
from dui.residents.operations import today
from ins import Evidence, IdentityStatus, InsTraits
from ins.matching import Match
from ins.traits import check_traits

LOCAL_ID_SYSTEM = "https://identifiant-medicosocial-localusager.esante.gouv.fr"  # TDDUI local identifier (PI)
PI_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PI"}]}


@dataclass(frozen=True)
class Admission:
    patient: ResourceVersion
    duplicates: list[tuple[ResourceVersion, Match]]


def admit(ctx: FhirContext, traits: InsTraits, local_id: str | None = None) -> Admission:
    """Create the resident's record with a provisional identity; list the records it may duplicate."""
    problems = [p for p in check_traits(traits, today(ctx)) if p.severity == "error"]
    if problems:
        raise Unprocessable("The identity traits break the INS rules", code="business-rule",
                            issues=[rules.trait_issue(p) for p in problems])
    body = ctx.prepare("Patient", provisional_patient(traits, local_id), None)
    ctx.validator.check(body)
    version = ctx.internal.create("Patient", body)
    provenance.record(ctx, provenance.ADMITTED, [version])
    found = duplicates.find_matches(ctx, version.resource())
    return Admission(version, [(v, m) for v, m in found if v.id != version.id])


def provisional_patient(traits: InsTraits, local_id: str | None = None) -> dict[str, Any]:
    """The Patient an admission writes: ``traits`` stated, identity provisoire, the local identifier if any."""
    body = mapping.with_traits({"resourceType": "Patient", "active": True}, traits)
    if local_id:
        body["identifier"] = [{"use": "usual", "type": PI_TYPE, "system": LOCAL_ID_SYSTEM, "value": local_id}]
    return mapping.with_identity(body, IdentityStatus.PROV, Evidence())
