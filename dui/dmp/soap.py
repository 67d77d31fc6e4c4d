"""XDS.b over SOAP 1.2 with WS-Addressing, WS-Security (the VIHF), MTOM/XOP and mutual TLS: the only network code
of ``dui.dmp`` (stdlib ``http.client`` and ``ssl``).

A request is a ``multipart/related; type="application/xop+xml"`` message (W3C XOP / SOAP MTOM, IHE ITI TF-2x
Appendix V): the root part is the SOAP envelope, the document is a binary part that the ``xdsb:Document``
references with ``xop:Include href="cid:…"``. Answers are read with the hardened parser, MTOM or plain SOAP.

UNCONFIRMED (docs/dmp.md): the DMPi endpoints and WSDLs; TD0.2 is sent here as an ITI-18 FindDocuments stored query
(ObjectRef) on the patient, whose ``XDSUnknownPatientId`` error says "no DMP"; the DMP-specific TD0.2 web service is
not public. Errors: network, TLS, timeout, HTTP 5xx, SOAP Receiver fault → ``Transient``; registry Failure, SOAP
Sender fault, any other HTTP error → ``Permanent``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.message
import http.client
import os
import re
import ssl
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from lxml import etree

from dui.dmp.ebrim import (
    DE_CONFIDENTIALITY,
    DE_UNIQUE_ID,
    NS_RIM,
    Outcome,
    RegistryError,
    parse_response,
    provide_request,
    update_request,
)
from dui.dmp.errors import Permanent, Transient
from dui.dmp.gateway import Access, Registered, with_masking
from dui.dmp.metadata import APPROVED, MASKING_OID, DocumentEntry, submission_set
from dui.dmp.vihf import VihfContext, sign_vihf
from dui.fhir.xmlsafe import UnsafeXml, parse_untrusted

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_WSA = "http://www.w3.org/2005/08/addressing"
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NS_QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
ACTION_PROVIDE = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ACTION_UPDATE = "urn:ihe:iti:2010:UpdateDocumentSet"
ACTION_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"
MAX_RESPONSE_BYTES = 4 << 20


@dataclass(frozen=True)
class Mtom:
    """A parsed MTOM message: the root part (the SOAP envelope) and the other parts by Content-ID."""

    root: bytes
    parts: dict[str, bytes]


def envelope(action: str, to: str, body: etree._Element, assertion: etree._Element | None) -> etree._Element:
    """A SOAP 1.2 envelope with the WS-Addressing headers and, when given, the VIHF in ``wsse:Security``."""
    env = etree.Element(f"{{{NS_SOAP}}}Envelope", nsmap={"soap": NS_SOAP, "wsa": NS_WSA})
    header = etree.SubElement(env, f"{{{NS_SOAP}}}Header")
    must = {f"{{{NS_SOAP}}}mustUnderstand": "true"}
    etree.SubElement(header, f"{{{NS_WSA}}}Action", must).text = action
    etree.SubElement(header, f"{{{NS_WSA}}}MessageID").text = f"urn:uuid:{uuid.uuid4()}"
    etree.SubElement(etree.SubElement(header, f"{{{NS_WSA}}}ReplyTo"), f"{{{NS_WSA}}}Address").text = ANONYMOUS
    etree.SubElement(header, f"{{{NS_WSA}}}To", must).text = to
    if assertion is not None:
        security = etree.SubElement(header, f"{{{NS_WSSE}}}Security", must, nsmap={"wsse": NS_WSSE})
        security.append(assertion)
    etree.SubElement(env, f"{{{NS_SOAP}}}Body").append(body)
    return env


def mtom_package(soap: bytes, action: str, attachments: dict[str, tuple[bytes, str]]) -> tuple[str, bytes]:
    """(Content-Type, body) of the MTOM message whose root part is ``soap`` and whose other parts are
    ``attachments`` (Content-ID → (bytes, media type)); the parts are sent as binary, untouched."""
    root_id = f"root.{uuid.uuid4()}@dui"
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    while any(boundary.encode() in data for data in [soap, *(d for d, _ in attachments.values())]):
        boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    out = bytearray()

    def part(content_id: str, content_type: str, data: bytes) -> None:
        out.extend(f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: binary\r\n"
                   f"Content-ID: <{content_id}>\r\n\r\n".encode("ascii"))
        out.extend(data)
        out.extend(b"\r\n")

    part(root_id, f'application/xop+xml; charset=UTF-8; type="application/soap+xml; action=\\"{action}\\""', soap)
    for content_id, (data, media_type) in attachments.items():
        part(content_id, media_type, data)
    out.extend(f"--{boundary}--\r\n".encode("ascii"))
    content_type = (f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; start="<{root_id}>"; '
                    f'start-info="application/soap+xml"; action="{action}"')
    return content_type, bytes(out)


def _params(content_type: str) -> email.message.Message:
    message = email.message.Message()
    message["Content-Type"] = content_type
    return message


def parse_mtom(content_type: str, body: bytes) -> Mtom:
    """The parts of an MTOM (``multipart/related``) message, or a plain SOAP message as its root.

    Raises ``ValueError`` when the multipart structure is broken or the start part is missing."""
    header = _params(content_type)
    if header.get_content_type() != "multipart/related":
        return Mtom(body, {})
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise ValueError("multipart/related without a boundary")
    start = header.get_param("start")
    delimiter = b"--" + boundary.encode("ascii")
    chunks = body.split(b"\r\n" + delimiter)
    first = chunks[0]
    if not first.startswith(delimiter):
        if delimiter not in first:
            raise ValueError("no first boundary")
        first = first[first.index(delimiter):]
    chunks[0] = first[len(delimiter):]
    parts: dict[str, bytes] = {}
    order: list[str] = []
    closed = False
    for chunk in chunks:
        if chunk.startswith(b"--"):
            closed = True
            break
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a MIME part without headers")
        headers = {k.strip().lower(): v.strip() for k, _, v in (
            line.decode("latin-1").partition(":") for line in head.split(b"\r\n") if b":" in line)}
        content_id = headers.get("content-id", "").strip("<>")
        parts[content_id] = data
        order.append(content_id)
    if not closed or not order:
        raise ValueError("the multipart message is not closed")
    root_id = start.strip("<>") if isinstance(start, str) else order[0]
    if root_id not in parts:
        raise ValueError("the start part is missing")
    root = parts.pop(root_id)
    return Mtom(root, parts)


def resolve_includes(mtom: Mtom) -> dict[str, bytes]:
    """The bytes each ``xop:Include`` of the root part points at, by Content-ID (for a retrieve, or a test)."""
    root = parse_untrusted(mtom.root)
    found: dict[str, bytes] = {}
    for include in root.iter("{http://www.w3.org/2004/08/xop/include}Include"):
        cid = (include.get("href") or "").removeprefix("cid:")
        if cid not in mtom.parts:
            raise ValueError(f"xop:Include of a missing part {cid}")
        found[cid] = mtom.parts[cid]
    return found


def tls_context(ca: str, cert: str, key: str | None = None, passphrase: bytes | None = None) -> ssl.SSLContext:
    """A client TLS context trusting ``ca``, presenting ``cert`` (PEM with ``key``, or PKCS#12 ``.p12``/``.pfx``
    protected by ``passphrase``)."""
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert.lower().endswith((".p12", ".pfx")):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.serialization import pkcs12

        with open(cert, "rb") as handle:
            private_key, certificate, chain = pkcs12.load_key_and_certificates(handle.read(), passphrase)
        if private_key is None or certificate is None:
            raise ValueError("the PKCS#12 file has no key or no certificate")
        with tempfile.TemporaryDirectory() as private:  # ssl loads a chain from files only; mode 0700 directory
            path = os.path.join(private, "client.pem")
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
                out.write(private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
                for item in (certificate, *(chain or ())):
                    out.write(item.public_bytes(serialization.Encoding.PEM))
            context.load_cert_chain(path)
    else:
        context.load_cert_chain(cert, key, password=passphrase)
    return context


def _fault(root: etree._Element) -> tuple[str, str] | None:
    fault = root.find(f"{{{NS_SOAP}}}Body/{{{NS_SOAP}}}Fault")
    if fault is None:
        return None
    code = fault.findtext(f"{{{NS_SOAP}}}Code/{{{NS_SOAP}}}Value", "") or ""
    reason = fault.findtext(f"{{{NS_SOAP}}}Reason/{{{NS_SOAP}}}Text", "") or ""
    return code.rsplit(":", 1)[-1], reason


class SoapDmpGateway:
    """The DMP over XDS.b (``DmpGateway``). ``vihf`` is the VIHF context of this structure (its ``ins`` is replaced by
    each request's patient); ``source_id`` the producing system's OID; ``now`` a clock (tests)."""

    def __init__(self, url: str, cert: str, key: str | None, ca: str, signing_cert: bytes, signing_key: bytes,
                 timeout: float, *, vihf: VihfContext, source_id: str, passphrase: bytes | None = None,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 allow_simulator: bool = True) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("the DMP url must be https://host[:port]/path")
        self.url = url
        self._host, self._port, self._path = parts.hostname, parts.port or 443, parts.path or "/"
        self._context = tls_context(ca, cert, key, passphrase)
        self._signing = (signing_cert, signing_key)
        self.timeout = timeout
        self.vihf = vihf
        self.source_id = source_id
        self.now = now
        self.allow_simulator = allow_simulator  # False in production: an endpoint saying it is a simulator is refused

    def _assertion(self, patient_id: str) -> etree._Element:
        ins = patient_id.split("^", 1)[0]
        match = re.search(r"\^\^\^&([0-9.]+)&ISO", patient_id)
        context = dataclasses.replace(self.vihf, ins=ins, ins_oid=match.group(1) if match else self.vihf.ins_oid)
        return sign_vihf(context, self._signing[0], self._signing[1], self.now())

    def _post(self, content_type: str, body: bytes, action: str) -> bytes:
        connection = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=self._context)
        try:
            connection.request("POST", self._path, body=body, headers={
                "Content-Type": content_type, "SOAPAction": f'"{action}"', "Accept": "multipart/related, "
                "application/soap+xml"})
            response = connection.getresponse()
            data = response.read(MAX_RESPONSE_BYTES + 1)
            status, answer_type = response.status, response.getheader("Content-Type", "")
            simulator = response.getheader("X-Simulator")
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise Transient(f"the DMP could not be reached: {type(exc).__name__}") from None
        finally:
            connection.close()
        if simulator and not self.allow_simulator:
            raise Permanent(f"{self.url} answers as a simulator ({simulator}): refused in production")
        if len(data) > MAX_RESPONSE_BYTES:
            raise Transient("the DMP answer is too large")
        try:
            root_bytes = parse_mtom(answer_type, data).root
            root = parse_untrusted(root_bytes)
        except (ValueError, UnsafeXml) as exc:
            if status >= 500:
                raise Transient(f"the DMP answered HTTP {status}") from None
            raise Permanent(f"unreadable DMP answer (HTTP {status}): {exc}") from None
        fault = _fault(root)
        if fault is not None:
            error = Transient if fault[0] == "Receiver" else Permanent
            raise error(f"SOAP fault {fault[0]}: {fault[1][:200]}")
        if status >= 500:
            raise Transient(f"the DMP answered HTTP {status}")
        if status >= 300:
            raise Permanent(f"the DMP answered HTTP {status}")
        return root_bytes

    def _send(self, action: str, body: etree._Element, patient_id: str,
              attachments: dict[str, tuple[bytes, str]]) -> bytes:
        soap = etree.tostring(envelope(action, self.url, body, self._assertion(patient_id)), encoding="UTF-8",
                              xml_declaration=True)
        content_type, payload = mtom_package(soap, action, attachments)
        return self._post(content_type, payload, action)

    def _outcome(self, answer: bytes) -> Outcome:
        try:
            outcome = parse_response(answer)
        except (ValueError, UnsafeXml) as exc:
            raise Permanent(f"unexpected DMP answer: {exc}") from None
        if outcome.status == "Failure":
            raise Permanent("the DMP refused the request", outcome.errors)
        return outcome

    def provide(self, entry: DocumentEntry, cda: bytes, replaces: str | None = None) -> Outcome:
        content_id = f"doc.{uuid.uuid4()}@dui"
        submission = submission_set(entry, self.source_id, f"{self.source_id}.{uuid.uuid4().int % 10**20}",
                                    self.now())
        request = provide_request(entry, submission, content_id, replaces)
        answer = self._send(ACTION_PROVIDE, request, entry.patient_id, {content_id: (cda, entry.mime_type)})
        return self._outcome(answer)

    def lookup(self, unique_id: str, patient_id: str) -> Registered | None:
        answer = self._send(ACTION_QUERY, get_documents(unique_id), patient_id, {})
        return read_registered(answer, unique_id)

    def update_metadata(self, entry: DocumentEntry, registered: Registered, *,
                        masking: frozenset[str] | None = None, status: str | None = None) -> Outcome:
        submission = submission_set(entry, self.source_id, f"{self.source_id}.{uuid.uuid4().int % 10**20}",
                                    self.now())
        updated = None if masking is None else dataclasses.replace(
            with_masking(entry, masking), availability_status=registered.status)
        request = update_request(submission, entry=updated, logical_id=registered.logical_id,
                                 previous_version=str(registered.version),
                                 status_change=(registered.status, status) if status else None)
        return self._outcome(self._send(ACTION_UPDATE, request, entry.patient_id, {}))

    def check(self, ins: str, ins_oid: str) -> Access:
        patient_id = f"{ins}^^^&{ins_oid}&ISO^NH"
        answer = self._send(ACTION_QUERY, find_documents(patient_id), patient_id, {})
        return read_access(answer)


def find_documents(patient_id: str) -> etree._Element:
    """An ITI-18 FindDocuments stored query (ObjectRef) on the approved entries of ``patient_id``."""
    request = etree.Element(f"{{{NS_QUERY}}}AdhocQueryRequest", nsmap={"query": NS_QUERY, "rim": NS_RIM})
    etree.SubElement(request, f"{{{NS_QUERY}}}ResponseOption", returnType="ObjectRef", returnComposedObjects="true")
    query = etree.SubElement(request, f"{{{NS_RIM}}}AdhocQuery", id=FIND_DOCUMENTS)
    for name, value in (("$XDSDocumentEntryPatientId", f"'{patient_id}'"),
                        ("$XDSDocumentEntryStatus", "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')")):
        slot = etree.SubElement(query, f"{{{NS_RIM}}}Slot", name=name)
        etree.SubElement(etree.SubElement(slot, f"{{{NS_RIM}}}ValueList"), f"{{{NS_RIM}}}Value").text = value
    return request


def get_documents(unique_id: str) -> etree._Element:
    """An ITI-18 GetDocuments stored query (LeafClass) on the entry ``unique_id``."""
    request = etree.Element(f"{{{NS_QUERY}}}AdhocQueryRequest", nsmap={"query": NS_QUERY, "rim": NS_RIM})
    etree.SubElement(request, f"{{{NS_QUERY}}}ResponseOption", returnType="LeafClass", returnComposedObjects="true")
    query = etree.SubElement(request, f"{{{NS_RIM}}}AdhocQuery", id=GET_DOCUMENTS)
    slot = etree.SubElement(query, f"{{{NS_RIM}}}Slot", name="$XDSDocumentEntryUniqueId")
    etree.SubElement(etree.SubElement(slot, f"{{{NS_RIM}}}ValueList"), f"{{{NS_RIM}}}Value").text = \
        "('" + unique_id.replace("'", "''") + "')"
    return request


def read_registered(answer: bytes, unique_id: str) -> Registered | None:
    """The current version of the entry ``unique_id`` in an ITI-18 LeafClass answer, or None when absent."""
    response = _query_response(answer)
    if response.get("status", "").endswith(":Failure"):
        codes = ", ".join(sorted({e.error_code for e in _query_errors(response)}))
        raise Permanent(f"the DMP refused the query: {codes}", _query_errors(response))
    current: Registered | None = None
    for obj in response.iter(f"{{{NS_RIM}}}ExtrinsicObject"):
        ids = {e.get("identificationScheme"): e.get("value") for e in obj.iter(f"{{{NS_RIM}}}ExternalIdentifier")}
        if ids.get(DE_UNIQUE_ID) != unique_id:
            continue
        version_info = obj.find(f"{{{NS_RIM}}}VersionInfo")
        try:
            version = int(version_info.get("versionName", "1")) if version_info is not None else 1
        except ValueError:
            raise Permanent("the DMP answered a version that is not a number") from None
        masking = frozenset(
            c.get("nodeRepresentation", "") for c in obj.iter(f"{{{NS_RIM}}}Classification")
            if c.get("classificationScheme") == DE_CONFIDENTIALITY
            and MASKING_OID in (v.text for v in c.iter(f"{{{NS_RIM}}}Value")))
        found = Registered(entry_uuid=obj.get("id", ""), logical_id=obj.get("lid") or obj.get("id", ""),
                           version=version, status=obj.get("status", APPROVED), masking=masking)
        if current is None or found.version > current.version:
            current = found
    return current


def _query_response(answer: bytes) -> etree._Element:
    root = parse_untrusted(answer)
    response = root if root.tag == f"{{{NS_QUERY}}}AdhocQueryResponse" else root.find(
        f".//{{{NS_QUERY}}}AdhocQueryResponse")
    if response is None:
        raise Permanent("no AdhocQueryResponse in the DMP answer")
    return response


def _query_errors(response: etree._Element) -> tuple[RegistryError, ...]:
    return tuple(RegistryError(e.get("errorCode", ""), e.get("codeContext", ""),
                               e.get("severity", "").rsplit(":")[-1])
                 for e in response.iter("{urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0}RegistryError"))


def read_access(answer: bytes) -> Access:
    """TD0.2 as read from an ITI-18 answer: ``XDSUnknownPatientId`` → no DMP; an access error → not authorized."""
    response = _query_response(answer)
    codes = {e.error_code for e in _query_errors(response)}
    if "XDSUnknownPatientId" in codes:
        return Access(exists=False, authorized=False, detail="XDSUnknownPatientId")
    if response.get("status", "").endswith(":Failure"):
        return Access(exists=True, authorized=False, detail=", ".join(sorted(codes)))
    return Access(exists=True, authorized=True)
