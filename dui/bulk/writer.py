"""Writing an export: each type's resources as NDJSON files, streamed from the store, shared by the export job
(``dui.bulk.worker``) and ``dui export --ndjson``.

For each type, the search of ``dui.bulk.request.plans`` is paged by row id (the engine's keyset cursor) as the
requester, so a scoped caller gets exactly what its searches find. A page of row ids is read in batches bounded by
the size of the stored bodies (``batch_bytes``), not by their number: a scanned document's Binary may weigh megabytes.
Each resource is written as the stored JSON text, one line (no re-serialisation), and a file is closed before it
would exceed ``file_bytes`` (a single resource larger than that has a file of its own). Nothing holds a whole type, a
whole page of bodies or a whole file in memory: what is held is one batch of bodies and the residents' ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from dui.bulk.files import Output, Sink
from dui.fhir.interactions.base import FhirContext
from dui.fhir.repository import ResourceVersion
from dui.fhir.scope import Residents, is_resident_data
from dui.fhir.search.plan import SearchPlan
from dui.fhir.tables import resource, resource_version


class Stopped(Exception):
    """The export was cancelled, or another worker took it over: stop writing."""


@dataclass
class FileInfo:
    type: str
    name: str
    count: int = 0
    bytes: int = 0
    chunks: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Written:
    files: list[FileInfo] = field(default_factory=list)
    patients: set[str] = field(default_factory=set)

    @property
    def resources(self) -> int:
        return sum(f.count for f in self.files)


@dataclass(frozen=True)
class Bounds:
    file_bytes: int
    batch_bytes: int


# (types done, types in all, the type being written, resources written so far) -> whether to go on
Progress = Callable[[int, int, str, int], bool]


def write_export(session: Session, ctx: FhirContext, searches: Sequence[tuple[str, SearchPlan]], sink: Sink,
                 bounds: Bounds, residents: Residents, members: frozenset[str] | None = None,
                 only_residents: bool = False, progress: Progress = lambda *_: True) -> Written:
    """Write every search's resources to ``sink``; ``members``: only resources of these residents (a Group export);
    ``only_residents``: only resources that belong to a resident (Patient and Group exports). ``progress`` is called
    after each page; ``Stopped`` when it answers False."""
    written = Written()
    for done, (rtype, plan) in enumerate(searches):
        out = _Splitter(sink, rtype, bounds.file_bytes, written)
        for versions in _pages(session, ctx, plan, bounds.batch_bytes):
            for version in versions:
                owners = _owners(residents, version) if is_resident_data(rtype) else set()
                if members is not None and not owners & members:
                    continue
                if only_residents and not owners:
                    continue
                out.write(version)
                written.patients |= owners
            if not progress(done, len(searches), rtype, written.resources):
                out.close()
                raise Stopped
        out.close()
    return written


def _owners(residents: Residents, version: ResourceVersion) -> set[str]:
    return residents.of(version.type, version.resource()) if version.body is not None else set()


def _pages(session: Session, ctx: FhirContext, plan: SearchPlan, batch_bytes: int) -> Iterator[list[ResourceVersion]]:
    """The resources of ``plan``, a batch at a time (a page's row ids, split by the size of their bodies)."""
    cursor = None
    while True:
        result = ctx.repo.search(dataclasses.replace(plan, cursor=cursor), total=None)
        for batch in _batches(session, result.rids, batch_bytes):
            yield ctx.repo.fetch(batch)
        if result.next_cursor is None or not result.rids:
            return
        cursor = result.next_cursor


def _batches(session: Session, rids: list[int], batch_bytes: int) -> Iterator[list[int]]:
    """``rids`` in order, cut so that the stored bodies of a batch weigh at most ``batch_bytes`` (a body larger than
    that alone), their sizes read from the database without the bodies."""
    if not rids:
        return
    current = and_(resource_version.c.rid == resource.c.rid, resource_version.c.version == resource.c.version)
    size = func.coalesce(func.length(resource_version.c.body), 0)
    rows = session.execute(select(resource.c.rid, size).join(resource_version, current)
                           .where(resource.c.rid.in_(rids))).all()
    sizes = {int(rid): int(weight) for rid, weight in rows}
    batch: list[int] = []
    weight = 0
    for rid in rids:
        body = sizes.get(rid, 0)
        if batch and weight + body > batch_bytes:
            yield batch
            batch, weight = [], 0
        batch.append(rid)
        weight += body
    if batch:
        yield batch


class _Splitter:
    """The files of one type: ``Type.ndjson``, then ``Type.2.ndjson``... each at most ``limit`` bytes."""

    def __init__(self, sink: Sink, rtype: str, limit: int, written: Written) -> None:
        self.sink = sink
        self.rtype = rtype
        self.limit = limit
        self.written = written
        self.output: Output | None = None
        self.info: FileInfo | None = None

    def write(self, version: ResourceVersion) -> None:
        assert version.body is not None
        # A raw line break cannot be inside a JSON string: any in the stored text is whitespace between tokens.
        line = version.body.replace(b"\r", b" ").replace(b"\n", b" ") + b"\n"
        if self.info is not None and self.info.count and self.info.bytes + len(line) > self.limit:
            self.close()
        if self.output is None:
            number = sum(1 for f in self.written.files if f.type == self.rtype) + 1
            name = f"{self.rtype}.ndjson" if number == 1 else f"{self.rtype}.{number}.ndjson"
            self.info = FileInfo(self.rtype, name)
            self.written.files.append(self.info)
            self.output = self.sink.open(name)
        assert self.info is not None
        self.output.write(line)
        self.info.count += 1
        self.info.bytes += len(line)

    def close(self) -> None:
        if self.output is not None and self.info is not None:
            self.info.chunks = self.output.close()
        self.output = None
        self.info = None
