"""The Patient compartment in SQL, for ``Patient/$everything`` (dui.fhir.interactions.everything).

Membership follows the R4 Patient CompartmentDefinition: a resource is in the compartment of a
Patient when one of the references its definition names (``Observation.subject``,
``AllergyIntolerance.patient``...) points at that Patient.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, select

from dui.fhir.definitions import patient_compartment
from dui.fhir.tables import resource, search_reference


@cache
def _compartment_pairs() -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((rtype, tuple(params)) for rtype, params in sorted(patient_compartment().items())
                 if rtype != "Patient" or params)


def compartment_members(patient_id: str) -> Any:
    """Row ids of the resources in the compartment of Patient ``patient_id`` (without the Patient)."""
    ref = search_reference.alias()
    by_type = [and_(ref.c.res_type == rtype, ref.c.param.in_(params)) for rtype, params in _compartment_pairs()]
    return (select(ref.c.rid)
            .where(ref.c.target_type == "Patient", ref.c.target_id == patient_id, or_(*by_type))
            .correlate(None))


def referenced_outside(patient_rid: int, patient_id: str) -> Any:
    """Row ids of what the record points at, outside the compartment; never another Patient."""
    ref = search_reference.alias()
    target = resource.alias()
    members = compartment_members(patient_id)
    return (select(target.c.rid)
            .join(ref, and_(ref.c.target_type == target.c.res_type, ref.c.target_id == target.c.res_id))
            .where(or_(ref.c.rid.in_(members), ref.c.rid == patient_rid), target.c.res_type != "Patient",
                   target.c.rid.not_in(members))
            .distinct().correlate(None))


def page_conditions(options: dict[str, Any]) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [resource.c.deleted == false()]
    if options["since"] is not None:
        conditions.append(resource.c.last_updated >= options["since"])
    if options["types"]:
        conditions.append(resource.c.res_type.in_(options["types"]))
    return conditions
