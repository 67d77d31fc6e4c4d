"""The Patient compartment in SQL, for ``Patient/$everything`` (dui.fhir.interactions.everything).

Membership follows the R4 Patient CompartmentDefinition: a resource is in the compartment of a
Patient when one of the references its definition names (``Observation.subject``,
``AllergyIntolerance.patient``...) points at that Patient.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Select, and_, exists, false, literal, select, union_all

from dui.fhir.definitions import patient_compartment
from dui.fhir.tables import resource, search_reference


@cache
def _compartment_pairs() -> tuple[str, ...]:
    """"Type.parameter" of the references that place a resource in a Patient's compartment."""
    return tuple(f"{rtype}.{param}" for rtype, params in sorted(patient_compartment().items()) for param in params)


def compartment_members(patient_id: str) -> Select[Any]:
    """Row ids of the resources in the compartment of Patient ``patient_id``.

    Deleted resources have no index rows, so every row here is a live resource. The type and
    parameter of each reference are checked as one string: a filter, which the planner applies to
    the rows of the (target type, target id, row id) index rather than trying to index it.
    """
    ref = search_reference.alias()
    return select(ref.c.rid.label("rid")).where(*_member(ref, patient_id)).correlate(None)


def _member(ref: Any, patient_id: str) -> list[ColumnElement[bool]]:
    """The conditions on a row ``ref`` of the reference index that put its resource in the compartment."""
    return [ref.c.target_type == "Patient", ref.c.target_id == patient_id,
            (ref.c.res_type + literal(".") + ref.c.param).in_(_compartment_pairs())]


def patient_page(patient_rid: int, patient_id: str, after: int, options: dict[str, Any],
                 limit: int) -> Select[Any]:
    """Phase 0 of $everything: the Patient itself (if the filters keep it)."""
    return select(resource.c.rid).where(resource.c.rid == patient_rid, resource.c.rid > after,
                                        *page_conditions(options))


def record_page(patient_rid: int, patient_id: str, after: int, options: dict[str, Any], limit: int) -> Select[Any]:
    """Phase 1 of $everything: the compartment, after row ``after``, in row-id order.

    Read from the reference index in row-id order and stopped at ``limit``: the cost of a page does
    not depend on the size of the record. ``_since`` is checked row by row on the resource.
    """
    ref = search_reference.alias()
    conditions: list[ColumnElement[bool]] = [
        ref.c.target_type == "Patient", ref.c.target_id == patient_id, ref.c.rid > after,
        (ref.c.res_type + literal(".") + ref.c.param).in_(_compartment_pairs()),
    ]
    if options["types"]:
        conditions.append(ref.c.res_type.in_(options["types"]))
    if options["since"] is not None:
        conditions.append(exists().where(resource.c.rid == ref.c.rid, resource.c.last_updated >= options["since"]))
    return select(ref.c.rid).where(*conditions).distinct().order_by(ref.c.rid).limit(limit)


def referenced_page(patient_rid: int, patient_id: str, after: int, options: dict[str, Any],
                    limit: int) -> Select[Any]:
    """Phase 2 of $everything: what the record points at outside the compartment; never a Patient."""
    ref = search_reference.alias()
    target = resource.alias()
    members = compartment_members(patient_id)
    # The record's rows (the compartment and the Patient) as one set: with ``rid IN members OR rid = patient`` the
    # planner could not drive the join from the record and scanned every reference and every resource (0.44 s a
    # page at 1 M resources).
    # ``NOT IN members`` likewise: a hashed subplan over the resource table, where ``NOT EXISTS`` checks the few
    # resources referenced, each on the reference index (1.4 ms a page at 1 M resources).
    record = union_all(members, select(literal(patient_rid, BigInteger).label("rid"))).subquery("record")
    member = search_reference.alias()
    in_record = exists(select(literal(1)).where(member.c.rid == target.c.rid, *_member(member, patient_id)))
    referenced = (select(target.c.rid.label("rid"))
                  .select_from(ref.join(target, and_(ref.c.target_type == target.c.res_type,
                                                     ref.c.target_id == target.c.res_id)))
                  .where(ref.c.rid.in_(select(record.c.rid)), target.c.res_type != "Patient",
                         ~in_record, target.c.rid > after)
                  .distinct().subquery("referenced"))
    return (select(referenced.c.rid)
            .join(resource, resource.c.rid == referenced.c.rid)
            .where(*page_conditions(options))
            .order_by(referenced.c.rid).limit(limit))


def page_conditions(options: dict[str, Any]) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [resource.c.deleted == false()]
    if options["since"] is not None:
        conditions.append(resource.c.last_updated >= options["since"])
    if options["types"]:
        conditions.append(resource.c.res_type.in_(options["types"]))
    return conditions
