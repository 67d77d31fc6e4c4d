"""``dui import --ndjson DIR``: NDJSON files (as ``$export`` and ``dui export --ndjson`` write them) put back into
the store, each resource by its id (``PUT Type/id``) through the FHIR router, under every write rule.

Idempotent: importing the same files again leaves the same resources (a new version of each, same content). The
files are read a line at a time and committed in batches (``BATCH`` resources a transaction, fewer when their lines
weigh more than ``batch_bytes`` together, as the export bounds its batches: a scanned document's Binary may weigh
megabytes, and 200 of them would fill memory; a line larger than that is a batch of its own): an error stops the
import naming the file and the line (never its content); what was committed stays, and running it again finishes.
Directory data first (organizations, practitioners, locations), then the residents, then the rest of their records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from dui.errors import DuiError, Invalid
from dui.fhir import jsontext, router
from dui.fhir.interactions.base import FhirContext, FhirRequest, check_id
from dui.fhir.scope import Residents, is_resident_data

BATCH = 200
BATCH_BYTES = 8 * 1024 * 1024  # the export's default batch_bytes
FIRST = ("Organization", "Practitioner", "Location", "PractitionerRole", "HealthcareService", "Device", "Patient")


@dataclass
class Imported:
    counts: dict[str, int] = field(default_factory=dict)
    patients: set[str] = field(default_factory=set)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def ordered(folder: Path) -> list[Path]:
    """The ``*.ndjson`` files of ``folder``, directory data and residents first."""
    files = sorted(folder.glob("*.ndjson"))
    rank = {rtype: i for i, rtype in enumerate(FIRST)}
    return sorted(files, key=lambda p: (rank.get(p.name.split(".")[0], len(FIRST)), p.name))


def import_folder(folder: Path, unit: Callable[[], AbstractContextManager[Session]],
                  context_of: Callable[[Session], FhirContext], residents: Residents,
                  progress: Callable[[str, int], None] = lambda *_: None,
                  batch_bytes: int = BATCH_BYTES) -> Imported:
    done = Imported()
    files = ordered(folder)
    if not files:
        raise Invalid(f"{folder} holds no .ndjson file")
    for path in files:
        for batch in _batches(_lines(path), batch_bytes):
            with unit() as session:
                ctx = context_of(session)
                for number, line in batch:
                    _put(ctx, path.name, number, line, done, residents)
            progress(path.name, done.total)
    return done


def _batches(lines: Iterator[tuple[int, bytes]], batch_bytes: int) -> Iterator[list[tuple[int, bytes]]]:
    """``lines`` by at most ``BATCH``, and at most ``batch_bytes`` together unless a single line is larger."""
    batch: list[tuple[int, bytes]] = []
    weight = 0
    for item in lines:
        if batch and (len(batch) == BATCH or weight + len(item[1]) > batch_bytes):
            yield batch
            batch, weight = [], 0
        batch.append(item)
        weight += len(item[1])
    if batch:
        yield batch


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            if line.strip():
                yield number, line


def _put(ctx: FhirContext, name: str, number: int, line: bytes, done: Imported, residents: Residents) -> None:
    where = f"{name} line {number}"
    try:
        content = jsontext.parse(line, ctx.settings.limits.max_json_depth)
        if not isinstance(content, dict) or not isinstance(content.get("resourceType"), str) \
                or not isinstance(content.get("id"), str):
            raise Invalid("each line is a FHIR resource with its resourceType and id")
        rtype, rid = content["resourceType"], check_id(content["id"])
        router.handle(ctx, FhirRequest("PUT", f"{rtype}/{rid}", (), {"content-type": "application/fhir+json",
                                                                    "prefer": "return=minimal"}, line))
    except DuiError as exc:
        exc.message = f"{where}: {exc.message}"  # the line at fault, never its content
        raise
    done.counts[rtype] = done.counts.get(rtype, 0) + 1
    if is_resident_data(rtype):
        done.patients |= residents.of(rtype, content)
