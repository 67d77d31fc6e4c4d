"""One export request written to a sink, as the actor of ``ctx``: the job's and ``dui export --ndjson``'s use case."""

from __future__ import annotations

from sqlalchemy.orm import Session

from dui.bulk import request
from dui.bulk.files import Sink
from dui.bulk.writer import Bounds, Progress, Written, write_export
from dui.errors import NotFound
from dui.fhir.interactions.base import FhirContext
from dui.fhir.scope import Residents
from dui.settings import ExportSettings


def export(session: Session, ctx: FhirContext, asked: request.ExportRequest, sink: Sink, conf: ExportSettings,
           residents: Residents, progress: Progress = lambda *_: True) -> Written:
    """Write what ``asked`` selects: every type's search, for a Group only its members' records, for Patient and
    Group exports only what belongs to a resident."""
    searches = request.plans(session, ctx, asked, conf.page)
    members = group_members(ctx, asked.group or "") if asked.level == "group" else None
    return write_export(session, ctx, searches, sink, Bounds(conf.file_bytes, conf.batch_bytes), residents,
                        members=members, only_residents=asked.level != "system", progress=progress)


def group_members(ctx: FhirContext, group_id: str) -> frozenset[str]:
    """The ids of the Patients a Group's ``member`` entries name (the Group as ``ctx``'s actor sees it)."""
    version = ctx.repo.read("Group", group_id)
    if version is None or version.deleted or version.body is None:
        raise NotFound(f"Group/{group_id} does not exist")
    found = set()
    for member in version.resource().get("member") or []:
        reference = (member.get("entity") or {}).get("reference") if isinstance(member, dict) else None
        if isinstance(reference, str):
            parts = reference.split("/_history/")[0].split("/")
            if len(parts) >= 2 and parts[-2] == "Patient":
                found.add(parts[-1])
    return frozenset(found)
