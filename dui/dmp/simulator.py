"""A local DMP simulator: an XDS.b Document Repository/Registry answering ITI-41 over mutual TLS. DEVELOPMENT ONLY.

It says that it is a simulator: the HTTP header ``X-Simulator: DMP`` on every answer, and a warning in its log
when it starts. It refuses, at TLS, clients without a certificate from its CA (``ins.insi.pki``). It accepts SOAP
1.2, plain or MTOM/XOP (``multipart/related; type="application/xop+xml"``), with the WS-Addressing Action
``urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b`` (anything else: a SOAP Fault). It checks the VIHF
assertion and the ebRIM metadata (``dui.dmp.simulator_checks``), stores accepted documents by uniqueId (a
second submission of the same uniqueId and hash is a Success with nothing added) and answers a
RegistryResponse. Tests inject faults with ``next_faults``. Plain Python: no Flask, no SQLAlchemy.

Run it with ``python -m dui.dmp.simulator --port 8444 --dir var/dmp-simulator`` (docs/dmp.md).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import email.parser
import email.policy
import logging
import socket
import ssl
import threading
import urllib.parse
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from lxml import etree

from dui.dmp.simulator_checks import (
    APPROVED,
    DE_CONFIDENTIALITY_CODE,
    DE_PATIENT_ID,
    DE_STABLE,
    DE_UNIQUE_ID,
    DEPRECATED,
    NS_LCM,
    NS_QUERY,
    NS_RIM,
    NS_RS,
    NS_SAML,
    NS_XDSB,
    NS_XOP,
    Entry,
    Query,
    Registry,
    Submission,
    Update,
    XdsError,
    check_submission,
    check_update,
    check_vihf,
    inline_document,
    q,
    read_query,
)
from dui.fhir.xmlsafe import UnsafeXml, parse_untrusted
from ins.insi.pki import Pki, make_pki

log = logging.getLogger(__name__)

PATH = "/dmp/xdsb"
ITI41_ACTION = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ITI41_RESPONSE_ACTION = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
ITI57_ACTION = "urn:ihe:iti:2010:UpdateDocumentSet"
ITI18_ACTION = "urn:ihe:iti:2007:RegistryStoredQuery"
RESPONSE_ACTIONS = {ITI41_ACTION: ITI41_RESPONSE_ACTION, ITI57_ACTION: "urn:ihe:iti:2010:UpdateDocumentSetResponse",
                    ITI18_ACTION: "urn:ihe:iti:2007:RegistryStoredQueryResponse"}
NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_WSA = "http://www.w3.org/2005/08/addressing"
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
PARTIAL_SUCCESS = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
SEVERITY_ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
SIMULATOR_HEADER = "X-Simulator"
# "none" answers normally: it places a fault on a later request (["none", "drop-after-store"]: the second one)
FAULTS = frozenset({"drop-after-store", "drop-before-store", "timeout", "http-500", "refuse", "none"})
MAX_REQUEST_BYTES = 20 * 1024 * 1024
_IO_TIMEOUT = 10.0


class DmpStore(Registry):
    """The simulator's documents, in memory, safe across the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self.submission_sets: list[str] = []

    def by_unique_id(self, unique_id: str) -> Entry | None:
        with self._lock:
            return next((e for e in self._entries if e.unique_id == unique_id), None)

    def by_entry_uuid(self, entry_uuid: str) -> Entry | None:
        with self._lock:
            return next((e for e in self._entries if e.entry_uuid == entry_uuid), None)

    def by_logical_id(self, logical_id: str) -> Entry | None:
        with self._lock:
            return next((e for e in self._entries if e.logical_id == logical_id), None)

    def apply(self, update: Update) -> None:
        """Apply a checked ITI-57 update, all or nothing: its versions and statuses are checked again under the
        lock (two updates of the same version: the second gets XDSMetadataVersionError)."""
        with self._lock:
            held = {e.logical_id: e for e in self._entries}
            for version in update.versions:
                if held[version.logical_id].version != version.previous_version:
                    raise XdsError("XDSMetadataVersionError", f"{version.logical_id}: its version has changed")
            for change in update.status_changes:
                if held[change.logical_id].status != change.original:
                    raise XdsError("XDSMetadataUpdateError", f"{change.logical_id}: its status has changed")
            for version in update.versions:
                entry = held[version.logical_id]
                entry.versions.append(entry.entry_uuid)
                entry.entry_uuid, entry.version = version.entry_uuid, entry.version + 1
                entry.confidentiality = version.confidentiality
            for change in update.status_changes:
                held[change.logical_id].status = change.new

    def save(self, submission: Submission) -> None:
        with self._lock:
            for entry in submission.entries:
                if any(e.unique_id == entry.unique_id for e in self._entries):
                    continue  # a concurrent twin got there first: still once
                if entry.replaces:
                    for held in self._entries:
                        if held.entry_uuid == entry.replaces:
                            held.status = DEPRECATED
                self._entries.append(entry)
            if submission.entries:
                self.submission_sets.append(submission.submission_set_unique_id)

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries)


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str


class _Fault(Exception):
    """A SOAP 1.2 Fault: ``code`` Sender or Receiver, ``subcode`` a QName text or ''."""

    def __init__(self, reason: str, code: str = "Sender", subcode: str = "") -> None:
        super().__init__(reason)
        self.reason, self.code, self.subcode = reason, code, subcode


class DmpSimulator:
    """``with DmpSimulator(make_pki(path)) as dmp: ... dmp.url``; ``dmp.next_faults([...])``, ``dmp.count(uid)``."""

    def __init__(self, pki: Pki, store: DmpStore | None = None, *, vihf_ca: Path | None = None,
                 host: str = "127.0.0.1", port: int = 0, timeout_seconds: float = 3.0,
                 patients: Iterable[str] | None = None, blocked: Iterable[str] = ()) -> None:
        self.pki = pki
        self.store = store if store is not None else DmpStore()
        self.vihf_ca = vihf_ca or pki.ca_cert
        self.host, self.port = host, port
        self.timeout_seconds = timeout_seconds
        # the INS matricules whose DMP exists; None: every well-formed INS has one
        self.patients = None if patients is None else frozenset(patients)
        # the INS matricules whose patient has blocked this structure (TD0.2 says "not authorized"; feeding refused)
        self.blocked = frozenset(blocked)
        self.received = 0
        self._faults: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self._tls.verify_mode = ssl.CERT_REQUIRED
        self._tls.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        self._tls.load_verify_locations(cafile=str(pki.ca_cert))
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- life -----------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}{PATH}"

    def start(self) -> DmpSimulator:
        if self._server is None:
            self._stopping.clear()
            self._server = _Server((self.host, self.port), self)
            self.port = int(self._server.server_address[1])
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name="dmp-simulator", daemon=True)
            self._thread.start()
            log.warning("DMP SIMULATOR (development and tests only, not the DMP) listening on %s", self.url)
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

    def __enter__(self) -> DmpSimulator:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    # --- test controls --------------------------------------------------------------------------------------
    def next_faults(self, faults: Iterable[str]) -> None:
        """Faults for the next requests, one each, in order: see ``FAULTS``."""
        faults = list(faults)
        unknown = set(faults) - FAULTS
        if unknown:
            raise ValueError(f"unknown faults: {', '.join(sorted(unknown))}; known: {', '.join(sorted(FAULTS))}")
        with self._lock:
            self._faults.extend(faults)

    def count(self, unique_id: str) -> int:
        return sum(1 for e in self.store.entries() if e.unique_id == unique_id)

    def documents_for(self, ins: str) -> list[Entry]:
        """The entries of a patient: ``ins`` is the matricule or the whole CX patientId."""
        return [e for e in self.store.entries() if ins in (e.patient_id, e.patient_id.split("^")[0])]

    def entry(self, unique_id: str) -> Entry | None:
        return self.store.by_unique_id(unique_id)

    def _take_fault(self) -> str | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    # --- one request ----------------------------------------------------------------------------------------
    def reply(self, content_type: str, data: bytes, fault: str | None = None) -> _Reply:
        """The answer to one POSTed request (no I/O). ``fault``: the injected fault, if any."""
        try:
            root, documents, mtom = _read_message(content_type, data)
            header, body, message_id, action = _envelope(root)
            if fault == "http-500":
                raise _Fault("simulated internal error of the DMP (fault injection)", "Receiver")
            answer = _Answer(message_id, mtom, RESPONSE_ACTIONS[action])
            if fault == "refuse":
                refusal = XdsError("XDSRegistryError", "simulated refusal (fault injection)")
                return answer.query(refusal) if action == ITI18_ACTION else answer.registry([refusal])
            request = next((c for c in body if isinstance(c.tag, str)), None)
            if request is None:
                raise _Fault("the SOAP Body is empty")
            security = header.find(q(NS_WSSE, "Security"))
            assertion = security.find(q(NS_SAML, "Assertion")) if security is not None else None
            try:
                vihf = check_vihf(assertion, self.vihf_ca)
                if action == ITI18_ACTION:
                    return answer.query(self._query(read_query(request), vihf.resource_id))
                if action == ITI57_ACTION:
                    update = check_update(request, self.store, vihf=vihf)
                    self._may_feed(update.patient_id)
                    self.store.apply(update)
                    log.info("DMP simulator: %d new version(s), %d status change(s)", len(update.versions),
                             len(update.status_changes))
                    return answer.registry([])
                submission = check_submission(request, _documents(request, documents), self.store, vihf=vihf)
                self._may_feed(submission.patient_id)
            except XdsError as error:
                log.info("DMP simulator: refused (%s)", error.code)  # its context quotes the INS: not logged
                return answer.query(error) if action == ITI18_ACTION else answer.registry([error])
            self.store.save(submission)
            log.info("DMP simulator: stored %d document(s), %d already held", len(submission.entries),
                     len(submission.duplicates))
            return answer.registry([])
        except _Fault as exc:
            return _Reply(400 if exc.code == "Sender" else 500, _fault_envelope(exc), _SOAP_TYPE)

    def _may_feed(self, patient_id: str) -> None:
        """Refuse a patient who has no DMP (XDSUnknownPatientId) or who blocked this structure."""
        matricule = patient_id.split("^")[0]
        if self.patients is not None and matricule not in self.patients:
            raise XdsError("XDSUnknownPatientId", f"no DMP for {patient_id}")
        if matricule in self.blocked:
            # The DMP's own code for this refusal is not public: the simulator says it with XDSRegistryError
            raise XdsError("XDSRegistryError", "access refused: the patient has blocked this structure (simulated)")

    def _query(self, query: Query, resource_id: str) -> tuple[str, list[Entry]]:
        """The entries a stored query finds, for the patient the VIHF names (never another patient's)."""
        if query.patient_id:
            if query.patient_id != resource_id:
                raise XdsError("XDSRegistryError", "VIHF refused: its resource-id is not the queried patient")
            self._may_feed(query.patient_id)
            found = [e for e in self.store.entries() if e.patient_id == query.patient_id and e.status in query.statuses]
        else:
            found = [e for e in self.store.entries() if e.patient_id == resource_id
                     and (e.unique_id in query.unique_ids or e.entry_uuid in query.entry_uuids)]
        return query.return_type, found

    def _serve(self, handler: _Handler) -> bool:
        """Answer one request; False when the connection must be dropped without an answer."""
        if handler.path != PATH:
            handler.send(404, b"the DMP simulator answers POST " + PATH.encode(), "text/plain")
            return True
        try:
            length = int(handler.headers.get("Content-Length", ""))
        except ValueError:
            handler.send(411, b"Content-Length is required", "text/plain")
            return True
        if length < 0 or length > MAX_REQUEST_BYTES:
            handler.send(413, _fault_envelope(_Fault(f"larger than {MAX_REQUEST_BYTES} bytes")), _SOAP_TYPE)
            return True
        data = handler.rfile.read(length)
        with self._lock:
            self.received += 1
        fault = self._take_fault()
        fault = None if fault == "none" else fault
        if fault == "drop-before-store":
            return False
        reply = self.reply(handler.headers.get("Content-Type", ""), data, fault)
        if fault == "drop-after-store":
            return False
        if fault == "timeout" and self._stopping.wait(self.timeout_seconds):
            return False
        handler.send(reply.status, reply.body, reply.content_type)
        return True


# --- messages -----------------------------------------------------------------------------------------------
_SOAP_TYPE = "application/soap+xml; charset=utf-8"
_BYTES_PARSER = email.parser.BytesParser(policy=email.policy.HTTP)


def _params(content_type: str) -> tuple[str, dict[str, str]]:
    parsed = _BYTES_PARSER.parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode("latin-1"))
    return parsed.get_content_type(), {k.lower(): str(v) for k, v in parsed["Content-Type"].params.items()}


def _read_message(content_type: str, data: bytes) -> tuple[etree._Element, dict[str, bytes], bool]:
    """The SOAP envelope, the MIME parts by Content-ID, and whether the request was MTOM."""
    try:
        media, params = _params(content_type)
    except (ValueError, UnicodeError, AttributeError):
        raise _Fault("unreadable Content-Type") from None
    if media == "application/soap+xml":
        return _parse(data), {}, False
    if media != "multipart/related" or params.get("type") != "application/xop+xml":
        raise _Fault('Content-Type must be application/soap+xml or multipart/related; type="application/xop+xml"')
    if not params.get("boundary"):
        raise _Fault("the multipart boundary is missing")
    message = _BYTES_PARSER.parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + data)
    if not message.is_multipart():
        raise _Fault("the multipart body is unreadable")
    parts: dict[str, bytes] = {}
    root_bytes: bytes | None = None
    start = params.get("start", "").strip().strip("<>")
    for index, part in enumerate(message.iter_parts()):
        content_id = str(part.get("Content-ID", "")).strip().strip("<>")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise _Fault(f"the MIME part {content_id or index} is unreadable")
        if (start and content_id == start) or (not start and index == 0):
            if part.get_content_type() != "application/xop+xml":
                raise _Fault("the root part must be application/xop+xml")
            if 'application/soap+xml' not in str(part.get_param("type", "")):
                raise _Fault('the root part must have type="application/soap+xml"')
            root_bytes = payload
        elif content_id:
            parts[content_id] = payload
    if root_bytes is None:
        raise _Fault("the root part of the multipart (start) is missing")
    return _parse(root_bytes), parts, True


def _parse(data: bytes) -> etree._Element:
    try:
        return parse_untrusted(data, max_bytes=MAX_REQUEST_BYTES)
    except UnsafeXml as exc:
        raise _Fault(f"the SOAP envelope is refused: {exc}") from None


def _envelope(root: etree._Element) -> tuple[etree._Element, etree._Element, str, str]:
    if root.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Envelope":
        raise _Fault("SOAP 1.1 envelope; the DMP speaks SOAP 1.2", "VersionMismatch")
    if root.tag != q(NS_SOAP, "Envelope"):
        raise _Fault("the request is not a SOAP 1.2 Envelope")
    header, body = root.find(q(NS_SOAP, "Header")), root.find(q(NS_SOAP, "Body"))
    if header is None or body is None:
        raise _Fault("the SOAP Header or Body is missing")
    action = (header.findtext(q(NS_WSA, "Action")) or "").strip()
    if action not in RESPONSE_ACTIONS:
        raise _Fault(f"the WS-Addressing Action {action or '(none)'} is not supported; this simulator answers "
                     f"{', '.join(RESPONSE_ACTIONS)}", "Sender", "wsa:ActionNotSupported")
    message_id = (header.findtext(q(NS_WSA, "MessageID")) or "").strip()
    if not message_id:
        raise _Fault("the WS-Addressing MessageID is missing", "Sender", "wsa:MessageAddressingHeaderRequired")
    return header, body, message_id, action


def _documents(request: etree._Element, parts: dict[str, bytes]) -> dict[str, bytes]:
    documents: dict[str, bytes] = {}
    for document in request.findall(q(NS_XDSB, "Document")):
        document_id = document.get("id") or ""
        if not document_id or document_id in documents:
            raise XdsError("XDSRepositoryMetadataError", "each Document needs a distinct id")
        include = document.find(q(NS_XOP, "Include"))
        if include is None:
            documents[document_id] = inline_document(document)
            continue
        href = include.get("href") or ""
        if not href.startswith("cid:"):
            raise XdsError("XDSRepositoryMetadataError", f"Document {document_id}: xop:Include href must be cid:")
        content_id = urllib.parse.unquote(href[4:])
        if content_id not in parts:
            raise XdsError("XDSMissingDocument", f"Document {document_id}: no MIME part {content_id}")
        documents[document_id] = parts[content_id]
    return documents


@dataclass(frozen=True)
class _Answer:
    """How to answer one request: to its MessageID, MTOM if it was, with the response Action of its own."""

    message_id: str
    mtom: bool
    action: str

    def registry(self, errors: list[XdsError]) -> _Reply:
        """A RegistryResponse (ITI-41, ITI-57): Success, or Failure with the errors."""
        response = etree.Element(q(NS_RS, "RegistryResponse"), nsmap={"rs": NS_RS},
                                 status=FAILURE if errors else SUCCESS)
        _errors(response, errors)
        return self._reply(response)

    def query(self, result: tuple[str, list[Entry]] | XdsError) -> _Reply:
        """An AdhocQueryResponse (ITI-18): the entries found, as ObjectRefs or as ExtrinsicObjects (LeafClass)."""
        response = etree.Element(q(NS_QUERY, "AdhocQueryResponse"), nsmap={"query": NS_QUERY, "rim": NS_RIM,
                                                                             "rs": NS_RS})
        if isinstance(result, XdsError):
            response.set("status", FAILURE)
            _errors(response, [result])
            etree.SubElement(response, q(NS_RIM, "RegistryObjectList"))
            return self._reply(response)
        response.set("status", SUCCESS)
        return_type, entries = result
        objects = etree.SubElement(response, q(NS_RIM, "RegistryObjectList"))
        for entry in entries:
            if return_type == "ObjectRef":
                etree.SubElement(objects, q(NS_RIM, "ObjectRef"), id=entry.entry_uuid)
            else:
                _leaf(objects, entry)
        return self._reply(response)

    def _reply(self, response: etree._Element) -> _Reply:
        envelope = etree.Element(q(NS_SOAP, "Envelope"), nsmap={"soap": NS_SOAP, "wsa": NS_WSA})
        header = etree.SubElement(envelope, q(NS_SOAP, "Header"))
        etree.SubElement(header, q(NS_WSA, "Action")).text = self.action
        etree.SubElement(header, q(NS_WSA, "MessageID")).text = f"urn:uuid:{uuid.uuid4()}"
        etree.SubElement(header, q(NS_WSA, "RelatesTo")).text = self.message_id
        etree.SubElement(header, "{urn:dui:dmp:simulateur}Simulateur").text = "DMP simulator: not the DMP"
        etree.SubElement(envelope, q(NS_SOAP, "Body")).append(response)
        xml = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
        if not self.mtom:
            return _Reply(200, xml, _SOAP_TYPE)
        boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
        root_id = f"<root.{uuid.uuid4().hex}@dmp-simulator>"
        body_bytes = (
            f"--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"\r\n"
            f"Content-Transfer-Encoding: binary\r\nContent-ID: {root_id}\r\n\r\n"
        ).encode() + xml + f"\r\n--{boundary}--\r\n".encode()
        content_type = (f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; start="{root_id}"; '
                        f'start-info="application/soap+xml"')
        return _Reply(200, body_bytes, content_type)


def _errors(response: etree._Element, errors: list[XdsError]) -> None:
    if errors:
        error_list = etree.SubElement(response, q(NS_RS, "RegistryErrorList"))
        for error in errors:
            etree.SubElement(error_list, q(NS_RS, "RegistryError"), errorCode=error.code,
                             codeContext=error.context, severity=SEVERITY_ERROR, location=error.location)


def _leaf(objects: etree._Element, entry: Entry) -> None:
    """The registered metadata a client needs back: ids, lid, version, status, confidentiality codes."""
    obj = etree.SubElement(objects, q(NS_RIM, "ExtrinsicObject"), id=entry.entry_uuid, lid=entry.logical_id,
                           status=entry.status, mimeType=entry.mime_type, objectType=DE_STABLE)
    for name, value in (("hash", entry.hash), ("size", str(entry.size))):
        slot = etree.SubElement(obj, q(NS_RIM, "Slot"), name=name)
        etree.SubElement(etree.SubElement(slot, q(NS_RIM, "ValueList")), q(NS_RIM, "Value")).text = value
    etree.SubElement(obj, q(NS_RIM, "VersionInfo"), versionName=str(entry.version))
    for code, scheme in entry.confidentiality:
        classification = etree.SubElement(obj, q(NS_RIM, "Classification"), id=f"urn:uuid:{uuid.uuid4()}",
                                          classificationScheme=DE_CONFIDENTIALITY_CODE,
                                          classifiedObject=entry.entry_uuid, nodeRepresentation=code)
        slot = etree.SubElement(classification, q(NS_RIM, "Slot"), name="codingScheme")
        etree.SubElement(etree.SubElement(slot, q(NS_RIM, "ValueList")), q(NS_RIM, "Value")).text = scheme
    for scheme, value in ((DE_PATIENT_ID, entry.patient_id), (DE_UNIQUE_ID, entry.unique_id)):
        etree.SubElement(obj, q(NS_RIM, "ExternalIdentifier"), id=f"urn:uuid:{uuid.uuid4()}",
                         identificationScheme=scheme, registryObject=entry.entry_uuid, value=value)


def _fault_envelope(fault: _Fault) -> bytes:
    envelope = etree.Element(q(NS_SOAP, "Envelope"), nsmap={"soap": NS_SOAP, "wsa": NS_WSA})
    body = etree.SubElement(envelope, q(NS_SOAP, "Body"))
    node = etree.SubElement(body, q(NS_SOAP, "Fault"))
    code = etree.SubElement(node, q(NS_SOAP, "Code"))
    etree.SubElement(code, q(NS_SOAP, "Value")).text = f"soap:{fault.code}"
    if fault.subcode:
        etree.SubElement(etree.SubElement(code, q(NS_SOAP, "Subcode")), q(NS_SOAP, "Value")).text = fault.subcode
    reason = etree.SubElement(node, q(NS_SOAP, "Reason"))
    text = etree.SubElement(reason, q(NS_SOAP, "Text"))
    text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    text.text = fault.reason
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))


# --- server -------------------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "DMP-simulateur/1.0"
    timeout = _IO_TIMEOUT

    def do_POST(self) -> None:
        if not self.server.simulator._serve(self):
            self.close_connection = True
            raise ConnectionAbortedError("fault injection: the connection is dropped without an answer")

    def do_GET(self) -> None:
        self.send(405, b"the DMP simulator answers POST " + PATH.encode(), "text/plain")

    def send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header(SIMULATOR_HEADER, "DMP")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests hold health data (fictitious here)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: DmpSimulator) -> None:
        self.simulator = simulator
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake in the request's own thread; a client without a certificate of the CA is refused."""
        request.settimeout(_IO_TIMEOUT)
        try:
            tls = self.simulator._tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError):
            return
        try:
            tls.do_handshake()
            _Handler(tls, client_address, self)
        except ConnectionAbortedError:  # an injected drop: close at once, no answer
            tls.close()
            return
        except (OSError, ValueError):  # refused at TLS (no certificate, another CA), or the client went away
            pass
        _close_gracefully(tls)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a broken connection is the client's business."""


def _close_gracefully(tls: ssl.SSLSocket) -> None:
    """Send FIN, then read what the client had already sent, so that it reads the answer or the TLS alert
    rather than a reset."""
    with contextlib.suppress(OSError, ValueError):
        tls.shutdown(socket.SHUT_WR)
        tls.settimeout(0.5)
        while tls.recv(65536):
            pass
    tls.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dui.dmp.simulator", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8444)
    parser.add_argument("--dir", type=Path, default=Path("var/dmp-simulator"), help="where the test PKI lives")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    pki = make_pki(args.dir)
    with DmpSimulator(pki, host=args.host, port=args.port) as simulator:
        print(f"DMP simulator (development only, not the DMP) listening on {simulator.url}")
        print(f"  client certificate (TLS and VIHF signature): {pki.client_cert}")
        print(f"  client key:                                  {pki.client_key}")
        print(f"  CA (trust anchor):                           {pki.ca_cert}")
        print("Ctrl-C to stop.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopped")


if __name__ == "__main__":
    main()


__all__ = ["APPROVED", "DEPRECATED", "FAULTS", "ITI41_ACTION", "NS_LCM", "NS_RIM", "DmpSimulator", "DmpStore"]


@dataclass(frozen=True)
class SigningPki:
    """The development "cachet": an RSA CA the simulator trusts for VIHF signatures, and the certificate and key
    that sign them (the DMP asks RSA-SHA256, which the INSi development PKI's EC keys cannot do)."""

    ca_cert: Path
    cert: Path
    key: Path


def make_signing_pki(directory: Path) -> SigningPki:
    """Create the development cachet in ``directory`` (reused when present)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    paths = SigningPki(directory / "vihf-ca.pem", directory / "vihf-cachet.pem", directory / "vihf-cachet.key")
    if all(p.exists() for p in (paths.ca_cert, paths.cert, paths.key)):
        return paths
    directory.mkdir(parents=True, exist_ok=True)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DUI (simulateur DMP)"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    ca_key, key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    ca = (x509.CertificateBuilder().subject_name(name("AC cachet de test")).issuer_name(name("AC cachet de test"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name("Cachet de test")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    paths.key.chmod(0o600)
    paths.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return paths
