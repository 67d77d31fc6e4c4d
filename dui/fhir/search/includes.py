"""``_include`` and ``_revinclude`` (with ``:iterate``): http://hl7.org/fhir/R4/search.html#include.

Each step is one query over the reference index: the targets of the page's references, or the
resources whose references point at the page. ``:iterate`` steps repeat on what was just included,
up to ``MAX_ROUNDS`` rounds, and the whole is capped at a number of resources, beyond which the
Bundle says it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, false, select

from dui.fhir.search.plan import Include
from dui.fhir.tables import resource, search_reference

MAX_ROUNDS = 4
# The aliases each step's statement uses, made once: SQLAlchemy builds an alias's column collection (a copy of every
# column of the table, its foreign keys included) when it is first used, which cost more than the rest of the
# statement. Each statement of this module stands alone, never nested in another, so one alias of each role serves
# them all.
_TARGET, _POINTED, _SOURCE = resource.alias("target"), resource.alias("pointed"), resource.alias("source")
_REF = search_reference.alias("ref")


def forward(include: Include, rids: Sequence[int]) -> Select[Any]:
    """Row ids of the resources that the references ``include`` names, of the rows ``rids``, point at."""
    target, ref = _TARGET, _REF
    conditions = [ref.c.rid.in_(rids), ref.c.res_type == include.source, target.c.deleted == false()]
    if include.code != "*":
        conditions.append(ref.c.param == include.code)
    if include.target:
        conditions.append(target.c.res_type == include.target)
    return (select(target.c.rid).distinct()
            .join(target, and_(target.c.res_type == ref.c.target_type, target.c.res_id == ref.c.target_id))
            .where(*conditions))


def reverse(include: Include, rids: Sequence[int]) -> Select[Any]:
    """Row ids of the ``include.source`` resources whose reference ``include.code`` points at ``rids``."""
    pointed, source, ref = _POINTED, _SOURCE, _REF
    conditions = [pointed.c.rid.in_(rids), source.c.deleted == false()]
    if include.source != "*":
        conditions.append(ref.c.res_type == include.source)
    if include.code != "*":
        conditions.append(ref.c.param == include.code)
    if include.target:
        conditions.append(pointed.c.res_type == include.target)
    return (select(ref.c.rid).distinct()
            .join(pointed, and_(pointed.c.res_type == ref.c.target_type, pointed.c.res_id == ref.c.target_id))
            .join(source, source.c.rid == ref.c.rid)
            .where(*conditions))
