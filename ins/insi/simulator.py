"""A local INSi simulator: a real HTTPS server with mutual TLS that checks requests and answers from a table.

For development and tests only. It says that it is a simulator, in the HTTP header
``X-INSi-Simulator: true`` and in a SOAP header element (``{urn:dui:insi:simulateur}Simulateur``),
so that a production client can refuse it. It refuses clients without a certificate from its CA
(``ins.insi.pki``). It checks what it receives, as far as the public knowledge of INSi goes
(``ins.insi.wire``), and answers a SOAP 1.2 ``Sender`` fault naming what is wrong (a
``VersionMismatch`` fault for a SOAP 1.1 envelope). It answers searches from its table with the
same matching rule as the in-memory twin (``ins.insi.table``); identities flagged ``fault`` get a
``Receiver`` fault and ``slow`` ones an answer after ``slow_seconds``.

Run it with ``python -m ins.insi.simulator --host 127.0.0.1 --port 8443 --dir var/insi-simulator``.
"""

from __future__ import annotations

import argparse
import collections
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from lxml import etree

from ins.insi.client import OPERATION_TRAITS, OPERATION_VITALE
from ins.insi.pki import Pki, make_pki
from ins.insi.result import fault_envelope, result_envelope
from ins.insi.table import (
    DEFAULT_IDENTITIES,
    SERVICE_FAULT_DETAIL,
    SERVICE_FAULT_DETAIL_CODE,
    SERVICE_FAULT_REASON,
    SERVICE_FAULT_SUBCODE,
    Answer,
    SimulatedIdentity,
    answer_traits,
    answer_vitale,
)
from ins.insi.wire import (
    LPS_CONTEXT,
    LPS_IDAM_R,
    NS_LPS,
    NS_RECSANS,
    NS_RECVIT,
    NS_SOAP,
    NS_SOAP11,
    NS_WSA,
    SIMULATOR_HTTP_HEADER,
    SOAP_CONTENT_TYPE,
    TRAITS_REQUEST,
    VITALE_REQUEST,
    TraitsFields,
    VitaleFields,
    XmlRefused,
    parse_xml,
    q,
    text_of,
    traits_problem,
    vitale_problem,
)

PATH = "/insi"
MAX_REQUEST_BYTES = 64 * 1024
_IO_TIMEOUT = 5.0


class _Problem(Exception):
    """A request the simulator refuses: ``code`` is the SOAP 1.2 fault code."""

    def __init__(self, reason: str, code: str = "Sender") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    slow: bool = False


def _one_text(parent: etree._Element, namespace: str, name: str, *, required: bool = True) -> str | None:
    found = parent.findall(q(namespace, name))
    if len(found) > 1:
        raise _Problem(f"{name} must appear once (one given name per call)")
    if not found:
        if required:
            raise _Problem(f"{name} is missing")
        return None
    return str(found[0].text or "").strip()


def _matricule(request: etree._Element, name: str, *, required: bool) -> str:
    holder = request.find(q(NS_RECVIT, name))
    if holder is None:
        if required:
            raise _Problem(f"{name} is missing")
        return ""
    number = _one_text(holder, NS_RECVIT, "NumIdentifiant") or ""
    return number + (_one_text(holder, NS_RECVIT, "Cle", required=False) or "")


def _check_context(header: etree._Element) -> None:
    context = header.find(q(NS_LPS, LPS_CONTEXT))
    if context is None:
        raise _Problem(f"the SOAP header {LPS_CONTEXT} ({NS_LPS}) is missing")
    software = context.find(q(NS_LPS, "LPS"))
    idam = software.find(q(NS_LPS, "IDAM")) if software is not None else None
    if software is None or idam is None or idam.get("R") != LPS_IDAM_R or not (idam.text or "").strip():
        raise _Problem(f'{LPS_CONTEXT}/LPS/IDAM with R="{LPS_IDAM_R}" is missing')
    if not (text_of(software, NS_LPS, "Instance") or ""):
        raise _Problem(f"{LPS_CONTEXT}/LPS/Instance is missing")
    name = text_of(software, NS_LPS, "Nom") or ""
    if not name.startswith("urn:lps:") or name.count(":") < 3:
        raise _Problem(f"{LPS_CONTEXT}/LPS/Nom must be urn:lps:<name>:<version>")


class InsiSimulator:
    """The simulator; ``with InsiSimulator(pki=make_pki(path)) as sim: ... sim.url``."""

    def __init__(self, identities: Sequence[SimulatedIdentity] = DEFAULT_IDENTITIES, *, pki: Pki,
                 host: str = "127.0.0.1", port: int = 0, delay: float = 0.0, slow_seconds: float = 15.0) -> None:
        self.identities = tuple(identities)
        self.pki = pki
        self.host = host
        self.port = port
        self.delay = delay
        self.slow_seconds = slow_seconds
        self.received: collections.deque[bytes] = collections.deque(maxlen=50)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self._tls.verify_mode = ssl.CERT_REQUIRED
        self._tls.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        self._tls.load_verify_locations(cafile=str(pki.ca_cert))
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}{PATH}"

    def start(self) -> InsiSimulator:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="insi-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server, self._thread = None, None

    def __enter__(self) -> InsiSimulator:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    # --- one request -------------------------------------------------------------------------------------
    def reply(self, content_type: str, data: bytes) -> _Reply:
        """The answer to one POSTed request (no I/O: also used by tests)."""
        try:
            return self._answer(content_type, data)
        except _Problem as problem:
            status = 400 if problem.code in ("Sender", "VersionMismatch") else 500
            return _Reply(status, fault_envelope(problem.code, problem.reason))

    def _answer(self, content_type: str, data: bytes) -> _Reply:
        media, _, params = content_type.partition(";")
        if media.strip().lower() != SOAP_CONTENT_TYPE:
            raise _Problem(f"Content-Type must be {SOAP_CONTENT_TYPE} (SOAP 1.2)")
        try:
            root = parse_xml(data)
        except XmlRefused as exc:
            raise _Problem(f"the request is refused: {exc}") from None
        if root.tag == q(NS_SOAP11, "Envelope"):
            raise _Problem("the envelope is SOAP 1.1; INSi speaks SOAP 1.2", "VersionMismatch")
        if root.tag != q(NS_SOAP, "Envelope"):
            raise _Problem("the request is not a SOAP 1.2 Envelope")
        header, body = root.find(q(NS_SOAP, "Header")), root.find(q(NS_SOAP, "Body"))
        if header is None:
            raise _Problem("the SOAP Header is missing")
        action = text_of(header, NS_WSA, "Action")
        if not action:
            raise _Problem("the WS-Addressing header Action is missing")
        if action not in (OPERATION_TRAITS, OPERATION_VITALE):
            raise _Problem("the WS-Addressing Action is not an INSi operation")
        declared = dict(_param(p) for p in params.split(";") if "=" in p).get("action")
        if declared is not None and declared != action:
            raise _Problem("the action parameter of the Content-Type differs from the WS-Addressing Action")
        message_id = text_of(header, NS_WSA, "MessageID")
        if not message_id:
            raise _Problem("the WS-Addressing header MessageID is missing")
        if not message_id.startswith(("urn:uuid:", "uuid:")):
            raise _Problem("the WS-Addressing MessageID must be a uuid URN")
        _check_context(header)
        requests = [c for c in body if isinstance(c.tag, str)] if body is not None else []
        if len(requests) != 1:
            raise _Problem("the SOAP Body must hold exactly one request")
        answer = self._traits(requests[0]) if action == OPERATION_TRAITS else self._vitale(requests[0])
        entry = answer.entry
        if entry is not None and entry.behaviour == "fault":
            return _Reply(500, fault_envelope("Receiver", SERVICE_FAULT_REASON, SERVICE_FAULT_SUBCODE,
                                              SERVICE_FAULT_DETAIL_CODE, SERVICE_FAULT_DETAIL))
        slow = entry is not None and entry.behaviour == "slow"
        return _Reply(200, result_envelope(action, message_id, answer), slow)

    def _traits(self, request: etree._Element) -> Answer:
        if request.tag != q(NS_RECSANS, TRAITS_REQUEST):
            raise _Problem(f"the Body of rechercherInsAvecTraitsIdentite must be {TRAITS_REQUEST} in {NS_RECSANS}")
        fields = TraitsFields(
            _one_text(request, NS_RECSANS, "NomNaissance") or "",
            _one_text(request, NS_RECSANS, "Prenom") or "",
            _one_text(request, NS_RECSANS, "Sexe") or "",
            _one_text(request, NS_RECSANS, "DateNaissance") or "",
            _one_text(request, NS_RECSANS, "LieuNaissance", required=False),
        )
        problem = traits_problem(fields)
        if problem:
            raise _Problem(problem[1])
        return answer_traits(self.identities, fields)

    def _vitale(self, request: etree._Element) -> Answer:
        if request.tag != q(NS_RECVIT, VITALE_REQUEST):
            raise _Problem(f"the Body of rechercherInsAvecCarteVitale must be {VITALE_REQUEST} in {NS_RECVIT}")
        fields = VitaleFields(
            _matricule(request, "MatriculeIndividu", required=False),
            _matricule(request, "MatriculeOD", required=True),
            _one_text(request, NS_RECVIT, "NomNaissance") or "",
            _one_text(request, NS_RECVIT, "DateNaissance") or "",
            _one_text(request, NS_RECVIT, "RangNaissance") or "",
        )
        problem = vitale_problem(fields)
        if problem:
            raise _Problem(problem[1])
        return answer_vitale(self.identities, fields)

    def _serve(self, handler: _Handler) -> None:
        try:
            length = int(handler.headers.get("Content-Length", ""))
        except ValueError:
            handler.send(411, b"Content-Length is required", "text/plain")
            return
        if length < 0 or length > MAX_REQUEST_BYTES:
            reply = _Reply(413, fault_envelope("Sender", f"the request is larger than {MAX_REQUEST_BYTES} bytes"))
        else:
            data = handler.rfile.read(length)
            if handler.path != PATH:
                handler.send(404, b"not found: the INSi simulator answers POST " + PATH.encode(), "text/plain")
                return
            self.received.append(data)
            reply = self.reply(handler.headers.get("Content-Type", ""), data)
        wait = self.delay + (self.slow_seconds if reply.slow else 0.0)
        if wait > 0 and self._stopping.wait(wait):
            return
        handler.send(reply.status, reply.body, f"{SOAP_CONTENT_TYPE}; charset=utf-8")


def _param(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.strip().lower(), value.strip().strip('"')


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "INSi-simulateur/1.0"
    timeout = _IO_TIMEOUT

    def do_POST(self) -> None:
        self.server.simulator._serve(self)

    def do_GET(self) -> None:
        self.send(405, b"the INSi simulator answers POST " + PATH.encode(), "text/plain")

    def send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header(SIMULATOR_HTTP_HEADER, "true")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests hold (fictitious) identities."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: InsiSimulator) -> None:
        self.simulator = simulator
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake in the request's own thread, so a bad client never blocks the others."""
        request.settimeout(_IO_TIMEOUT)
        try:
            tls = self.simulator._tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError):
            return
        try:
            tls.do_handshake()
        except (OSError, ValueError):  # refused: no certificate, an unknown CA, not TLS at all
            _close_gracefully(tls)
            return
        try:
            _Handler(tls, client_address, self)
        except (OSError, ValueError):
            pass  # the client went away (for example after its own timeout)
        finally:
            _close_gracefully(tls)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a broken connection is the client's business."""


def _close_gracefully(tls: ssl.SSLSocket) -> None:
    """Close so that the client reads what was sent (a TLS alert, an early answer) rather than a reset:
    send FIN, then read what the client had already sent (closing with unread data sends an RST)."""
    try:
        tls.shutdown(socket.SHUT_WR)  # drops the TLS layer: the reads below are plain TCP
        tls.settimeout(0.5)
        while tls.recv(65536):
            pass
    except (OSError, ValueError):
        pass
    finally:
        tls.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ins.insi.simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--dir", type=Path, default=Path("var/insi-simulator"), help="where the test PKI lives")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--slow-seconds", type=float, default=15.0, help="delay of the 'slow' identity")
    args = parser.parse_args(argv)
    pki = make_pki(args.dir)
    simulator = InsiSimulator(pki=pki, host=args.host, port=args.port, delay=args.delay,
                              slow_seconds=args.slow_seconds)
    with simulator:
        print(f"INSi simulator (development only) listening on {simulator.url}")
        print(f"  client certificate: {pki.client_cert}")
        print(f"  client key:         {pki.client_key}")
        print(f"  CA (trust anchor):  {pki.ca_cert}")
        print(f"  identities:         {', '.join(e.label for e in simulator.identities)}")
        print("Ctrl-C to stop.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopped")


if __name__ == "__main__":
    main()
