"""The gunicorn worker of ``dui serve``: gunicorn's threaded worker, whose answers to requests its HTTP parser
refuses for size (request line, header fields) are an OperationOutcome under ``/fhir`` and a JSON problem
elsewhere, with the security headers of every answer, and an audit entry; never gunicorn's HTML page.

Those requests never reach Flask: the parser refuses them before there is a request to hand over. Whether one
was for ``/fhir`` is read from the first bytes the client sent, peeked (``MSG_PEEK``, not consumed) before
gunicorn's parser reads them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from typing import Any

from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine
from gunicorn.workers import gthread

from dui.audit import trail
from dui.auth.actor import ANONYMOUS
from dui.errors import DuiError
from dui.fhir import jsontext
from dui.fhir.outcomes import error_outcome
from dui.web import limits
from dui.web.headers import CSP, HSTS

logger = logging.getLogger("dui.security")
FHIR_JSON = "application/fhir+json; charset=utf-8"
_REASONS = {414: "URI Too Long", 431: "Request Header Fields Too Large"}
_PEEK = 32  # enough for the longest method, a space and "/fhir"
_local = threading.local()


def is_fhir(start: bytes) -> bool:
    """Whether the first bytes of a request line name a path under /fhir."""
    _, _, rest = start.partition(b" ")
    return rest == b"/fhir" or rest.startswith((b"/fhir/", b"/fhir?", b"/fhir "))


def answer(err: DuiError, fhir: bool, request_id: str, prod: bool) -> bytes:
    """The whole HTTP answer to a refused request: status line, security headers, body."""
    status, outcome = error_outcome(err)
    if fhir:
        body, content_type = jsontext.dump(outcome), FHIR_JSON
    else:
        body = jsontext.dump({"type": "about:blank", "title": err.message, "status": status,
                              "errors": [i.diagnostics for i in err.issues]})
        content_type = "application/problem+json"
    headers = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Bad Request')}", f"Content-Type: {content_type}",
               f"Content-Length: {len(body)}", "Connection: close", "Cache-Control: no-store",
               "X-Content-Type-Options: nosniff", f"Content-Security-Policy: {CSP}", "X-Frame-Options: DENY",
               "Referrer-Policy: no-referrer", f"X-Request-Id: {request_id}"]
    if prod:
        headers.append(f"Strict-Transport-Security: {HSTS}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + body


class DuiWorker(gthread.ThreadWorker):  # type: ignore[misc]
    def handle(self, conn: Any) -> Any:
        # gunicorn's own first step (wait for the first bytes of a new connection), so that they can be peeked.
        if not getattr(conn, "initialized", True) and not getattr(conn, "data_ready", True) \
                and hasattr(gthread, "_DEFER") and not conn.wait_for_data(gthread.DEFAULT_WORKER_DATA_TIMEOUT):
            return gthread._DEFER
        try:
            _local.start = conn.sock.recv(_PEEK, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:
            _local.start = b""
        return super().handle(conn)

    def handle_abort(self, sig: int, frame: Any) -> None:
        """SIGABRT (gunicorn's worker timeout): the ``worker_abort`` hook (audit entries), then exit at once.
        gunicorn's own ``sys.exit`` would wait for every request thread, and one blocked in a read keeps the
        process (and the audit entries' duplicates, at the next abort) until the arbiter's SIGKILL."""
        self.alive = False
        try:
            self.cfg.worker_abort(self)
        finally:
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(1)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, LimitRequestLine):
            err: DuiError = limits.uri_too_long()
        elif isinstance(exc, LimitRequestHeaders):
            err = limits.headers_too_large()
        else:
            super().handle_error(req, client, addr, exc)
            return
        remote = addr[0] if isinstance(addr, tuple) and addr else None
        request_id = uuid.uuid4().hex
        svc = self.wsgi.extensions["dui"]
        fhir = is_fhir(getattr(_local, "start", b""))
        logger.warning("request refused by the HTTP parser", extra={
            "status": err.status, "limit": type(exc).__name__, "remote": remote, "refused_request": request_id})
        try:
            with svc.unit_of_work(write=True) as session:
                trail.record(session, trail.AuditEntry("request", "failed", ANONYMOUS, detail=type(exc).__name__,
                                                       status=err.status, source=remote, request_id=request_id),
                             svc.clock())
        except Exception:
            logger.exception("audit entry of a refused request not recorded", extra={"status": err.status})
        with contextlib.suppress(OSError):  # recorded first, as every answer of the FHIR edge
            client.sendall(answer(err, fhir, request_id, svc.settings.is_prod))
