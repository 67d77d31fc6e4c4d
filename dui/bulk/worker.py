"""The export job run by ``dui worker`` (outbox kind ``bulk.export``), never in the request that asked for it.

The export runs as its requester (``dui.bulk.jobs.requester``), through the same scoped repository as a request of
theirs, over the store as it stands while the job runs (``transactionTime`` is when it started: a resource changed
during the export may be in it with a later ``lastUpdated``, as the specification allows). Its progress is recorded
after each page in a short transaction of its own, which also extends the outbox job's lease (no other worker takes
a long export over while this one writes), and where a cancellation (``DELETE`` on the status) is seen: the export
then stops and its files go. Should a worker die, the outbox gives the job to another once the lease expires, and the
export starts again under a new attempt number, the dead one's files removed. When it completes, one audit entry
names every resident whose data it wrote.
"""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from dui.audit import trail
from dui.audit.trail import AuditEntry
from dui.bulk import export as bulk_export
from dui.bulk import jobs
from dui.bulk.files import SealedFolder, private_folder
from dui.bulk.writer import Stopped
from dui.errors import DuiError
from dui.outbox import queue
from dui.outbox.queue import Job
from dui.outbox.runner import Outcome, delivered, permanent

if TYPE_CHECKING:
    from dui.services import Services

logger = logging.getLogger(__name__)


def run_export(session: Session, job: Job, *, svc: Services) -> Outcome:
    export_id = job.target.partition("/")[2]
    conf = svc.settings.export
    retention = timedelta(hours=conf.retention_hours)
    with svc.unit_of_work(write=True) as units:
        export = jobs.start(units, export_id, svc.clock())
        if export is None:
            return delivered("nothing to run (cancelled, finished or removed)")
        actor = jobs.requester(units, export)
        key = svc.keyring.write_key(units)
    jobs.remove_files(conf.directory, export.id)  # what an earlier attempt left (its worker died)
    if actor is None:
        with svc.unit_of_work(write=True) as units:
            jobs.fail(units, export, "the requester may no longer export (disabled, or registered elsewhere)",
                      svc.clock(), retention)
        return delivered("failed: the requester may no longer export")
    ctx = svc.fhir_context(session, actor)

    def progress(done: int, total: int, rtype: str, count: int) -> bool:
        with svc.unit_of_work(write=True) as units:
            # the outbox lease follows the work: no other worker starts the export again while this one writes
            queue.renew(units, job, svc.clock() + timedelta(seconds=svc.settings.outbox.lease))
            return jobs.report(units, export, f"{done} of {total} types done, {count} resources written, "
                                              f"now {rtype}")

    try:
        private_folder(jobs.folder(conf.directory, export.id))
        sink = SealedFolder(jobs.attempt_folder(conf.directory, export), export.id, key)
        written = bulk_export.export(session, ctx, export.params, sink, conf, svc.residents, progress)
    except Stopped:
        shutil.rmtree(jobs.attempt_folder(conf.directory, export), ignore_errors=True)
        return delivered("stopped: cancelled or taken over")
    except DuiError as exc:  # the Group is gone, a search the requester may no longer run...
        shutil.rmtree(jobs.attempt_folder(conf.directory, export), ignore_errors=True)
        with svc.unit_of_work(write=True) as units:
            jobs.fail(units, export, exc.message, svc.clock(), retention)
        return delivered("failed")
    except Exception as exc:  # its message could quote data: only its class is kept, in the log too
        logger.warning("bulk export failed", extra={"export": export.id, "error": type(exc).__name__})
        shutil.rmtree(jobs.attempt_folder(conf.directory, export), ignore_errors=True)
        with svc.unit_of_work(write=True) as units:
            jobs.fail(units, export, f"the export failed ({type(exc).__name__})", svc.clock(), retention)
        return permanent(f"{type(exc).__name__} during the export")
    now = svc.clock()
    with svc.unit_of_work(write=True) as units:
        completed = jobs.complete(units, export, [f.to_json() for f in written.files], key.id, now, retention)
        if completed:
            trail.record(units, AuditEntry(
                "bulk-export", "success", actor, "BulkExport", export.id, status=200,
                detail=f"{written.resources} resources in {len(written.files)} files",
                count=written.resources, patients=tuple(sorted(written.patients))), now)
    if not completed:
        shutil.rmtree(jobs.attempt_folder(conf.directory, export), ignore_errors=True)
        return delivered("stopped: cancelled or taken over")
    return delivered(f"{written.resources} resources in {len(written.files)} files")
