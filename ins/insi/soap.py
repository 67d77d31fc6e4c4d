"""The INSi téléservice over SOAP 1.2, WS-Addressing and mutual TLS (stdlib ``http.client`` and ``ssl``).

Each search is one POST of a SOAP 1.2 envelope whose header carries the WS-Addressing ``Action``,
``MessageID`` (``urn:uuid:``) and ``To``, the ``ContexteBAM`` and the ``ContexteLPS`` (IDAM R="4",
Instance, Nom ``urn:lps:<name>:<version>``) of this software; the body is ``RECSANSVITALE`` (search
by traits) or ``RECVITALE`` (carte Vitale). The answer is a ``RESULTAT`` with its ``CR`` code, or a
SOAP fault. The answer is parsed with a hardened parser (no DTD, no entity, no network).

Element names, namespaces and the points that are UNCONFIRMED (the CNAM XSDs are not public) are
listed in one place: ``ins.insi.wire``.

Errors: ``InsiUnavailable`` when INSi cannot be reached or does not answer in time (network, TLS,
timeout, HTTP 5xx without a SOAP fault): retry later. ``InsiFault`` when INSi answers a SOAP fault.
``InsiProtocolError`` for any other unexpected answer. ``InsiError`` when the endpoint says it is a
simulator and ``allow_simulator`` is False. A query that breaks a field rule is refused before
sending with ``TraitError``. No message holds a name, a date of birth or a matricule.
"""

from __future__ import annotations

import datetime as dt
import http.client
import re
import socket
import ssl
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from lxml import etree

from ins.errors import InsiError, InsiProtocolError, InsiUnavailable
from ins.insi.client import OPERATION_TRAITS, OPERATION_VITALE, InsiResult, TraitsQuery, VitaleQuery
from ins.insi.result import read_fault, read_result
from ins.insi.wire import (
    BAM_CONTEXT,
    BAM_VERSION,
    LPS_CONTEXT,
    LPS_IDAM_R,
    LPS_NATURE,
    LPS_VERSION,
    MESSAGE_ID_PREFIX,
    NS_BAM,
    NS_LPS,
    NS_RECSANS,
    NS_RECVIT,
    NS_RESULTAT,
    NS_SIMULATOR,
    NS_SOAP,
    NS_WSA,
    RESULT,
    SIMULATOR_HTTP_HEADER,
    SIMULATOR_MARKER,
    SOAP_CONTENT_TYPE,
    TRAITS_REQUEST,
    VITALE_REQUEST,
    XmlRefused,
    parse_xml,
    q,
    traits_fields,
    vitale_fields,
)

MAX_RESPONSE_BYTES = 1 << 20
SIMULATOR_REFUSED = "the INSi endpoint is a simulator; production refuses it"


@dataclass(frozen=True)
class LpsContext:
    """Who is calling: the ``ContexteLPS`` of this software (and the ``Emetteur`` of the contexts).

    ``idam`` is the authorization number the CNAM gives after homologation (CNDA); the default is a
    placeholder that a real INSi will refuse. ``instance`` identifies this installation.
    """

    idam: str = "DUI-EHPAD-NON-HOMOLOGUE"
    name: str = "dui-ehpad"
    version: str = "0.1.0"
    instance: str = str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:lps:dui-ehpad"))
    emitter: str = "dui-ehpad"

    @property
    def urn(self) -> str:
        return f"urn:lps:{self.name}:{self.version}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _add(parent: etree._Element, namespace: str, name: str, text: str | None = None,
         **attributes: str) -> etree._Element:
    child = etree.SubElement(parent, q(namespace, name), **attributes)
    if text is not None:
        child.text = text
    return child


class SoapInsiClient:
    """``InsiClient`` talking to a real INSi endpoint (or to ``InsiSimulator``) over mutual TLS.

    ``cert_file``/``key_file``: the structure's client certificate and key (PEM). Empty strings
    present no certificate, which INSi refuses: only useful to test that refusal. ``ca_file``: the
    trust anchors for the INSi server certificate (empty: the system's). ``timeout`` bounds the
    connection and each read (not the whole exchange).
    """

    def __init__(self, url: str, cert_file: str, key_file: str, ca_file: str, *, timeout: float = 10.0,
                 lps: LpsContext = LpsContext(), allow_simulator: bool = True) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise InsiError("the INSi URL must be an https:// URL")
        self.url = url
        self._host = parts.hostname
        self._port = parts.port or 443
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._lps = lps
        self._allow_simulator = allow_simulator
        self._tls = _tls_context(cert_file, key_file, ca_file)

    def search_by_traits(self, query: TraitsQuery) -> InsiResult:
        fields = traits_fields(query.birth_family, query.given, query.sex, query.birth_date, query.birth_place)
        request = etree.Element(q(NS_RECSANS, TRAITS_REQUEST), nsmap={"insi_recsans_ins": NS_RECSANS})
        _add(request, NS_RECSANS, "NomNaissance", fields.nom)
        _add(request, NS_RECSANS, "Prenom", fields.prenom)
        _add(request, NS_RECSANS, "Sexe", fields.sexe)
        _add(request, NS_RECSANS, "DateNaissance", fields.date_naissance)
        if fields.lieu_naissance is not None:
            _add(request, NS_RECSANS, "LieuNaissance", fields.lieu_naissance)
        return self._call(OPERATION_TRAITS, request)

    def search_by_vitale(self, query: VitaleQuery) -> InsiResult:
        fields = vitale_fields(query.nir_individu, query.nir_od, query.birth_family, query.birth_date,
                               query.birth_rank)
        request = etree.Element(q(NS_RECVIT, VITALE_REQUEST), nsmap={"insi_recvit_ins": NS_RECVIT})
        for element, matricule in (("MatriculeIndividu", fields.matricule_individu),
                                   ("MatriculeOD", fields.matricule_od)):
            if matricule:
                holder = _add(request, NS_RECVIT, element)
                _add(holder, NS_RECVIT, "NumIdentifiant", matricule[:13])
                if len(matricule) == 15:
                    _add(holder, NS_RECVIT, "Cle", matricule[13:])
        _add(request, NS_RECVIT, "NomNaissance", fields.nom)
        _add(request, NS_RECVIT, "DateNaissance", fields.date_naissance)
        _add(request, NS_RECVIT, "RangNaissance", fields.rang)
        return self._call(OPERATION_VITALE, request)

    # --- one exchange ----------------------------------------------------------------------------------
    def envelope(self, action: str, message_id: str, request: etree._Element) -> bytes:
        """The SOAP 1.2 envelope of one request (public for tests and diagnostics)."""
        envelope = etree.Element(q(NS_SOAP, "Envelope"), nsmap={"soap": NS_SOAP, "wsa": NS_WSA, "ctxbam": NS_BAM,
                                                               "ctxlps": NS_LPS})
        header = _add(envelope, NS_SOAP, "Header")
        _add(header, NS_WSA, "Action", action)
        _add(header, NS_WSA, "MessageID", message_id)
        _add(header, NS_WSA, "To", self.url)
        now, lps = _now(), self._lps
        bam = _add(header, NS_BAM, BAM_CONTEXT, Version=BAM_VERSION)
        _add(bam, NS_BAM, "Id", str(uuid.uuid4()))
        _add(bam, NS_BAM, "Temps", now)
        _add(bam, NS_BAM, "Emetteur", lps.emitter)
        _add(bam, NS_BAM, "COUVERTURE")
        context = _add(header, NS_LPS, LPS_CONTEXT, Nature=LPS_NATURE, Version=LPS_VERSION)
        _add(context, NS_LPS, "Id", str(uuid.uuid4()))
        _add(context, NS_LPS, "Temps", now)
        _add(context, NS_LPS, "Emetteur", lps.emitter)
        software = _add(context, NS_LPS, "LPS")
        _add(software, NS_LPS, "IDAM", lps.idam, R=LPS_IDAM_R)
        _add(software, NS_LPS, "Version", lps.version)
        _add(software, NS_LPS, "Instance", lps.instance)
        _add(software, NS_LPS, "Nom", lps.urn)
        _add(envelope, NS_SOAP, "Body").append(request)
        return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))

    def _call(self, action: str, request: etree._Element) -> InsiResult:
        message_id = f"{MESSAGE_ID_PREFIX}{uuid.uuid4()}"
        status, simulator_header, data = self._post(action, self.envelope(action, message_id, request))
        return read_answer(status, simulator_header, data, message_id, allow_simulator=self._allow_simulator)

    def _post(self, action: str, envelope: bytes) -> tuple[int, bool, bytes]:
        headers = {
            "Content-Type": f'{SOAP_CONTENT_TYPE}; charset=utf-8; action="{action}"',
            "Accept": SOAP_CONTENT_TYPE,
            "User-Agent": f"{self._lps.name}/{self._lps.version}",
            "Connection": "close",
        }
        connection = http.client.HTTPSConnection(self._host, self._port, context=self._tls, timeout=self._timeout)
        try:
            connection.request("POST", self._path, body=envelope, headers=headers)
            response = connection.getresponse()
            simulator = (response.getheader(SIMULATOR_HTTP_HEADER) or "").strip().lower() == "true"
            return response.status, simulator, response.read(MAX_RESPONSE_BYTES + 1)
        except TimeoutError:
            raise InsiUnavailable(f"INSi did not answer within {self._timeout:g} s") from None
        except ssl.SSLCertVerificationError as exc:
            raise InsiUnavailable(
                f"TLS handshake with INSi failed: certificate verify failed ({exc.verify_message})") from None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            raise InsiUnavailable("TLS session with INSi closed by the server (client certificate refused?)") from None
        except ssl.SSLError as exc:
            raise InsiUnavailable(f"TLS handshake with INSi failed: {_ssl_reason(exc)}") from None
        except ConnectionRefusedError:
            raise InsiUnavailable(f"INSi refused the connection ({self._host}:{self._port})") from None
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            raise InsiUnavailable("INSi closed the connection without answering (TLS client certificate refused, "
                                  "or the service is down)") from None
        except socket.gaierror:
            raise InsiUnavailable("the INSi host name could not be resolved") from None
        except OSError as exc:
            raise InsiUnavailable(f"network error with INSi: {exc.strerror or type(exc).__name__}") from None
        except http.client.HTTPException as exc:
            raise InsiProtocolError(f"INSi's HTTP answer is malformed ({type(exc).__name__})") from None
        finally:
            connection.close()


def read_answer(status: int, simulator_header: bool, data: bytes, message_id: str, *,
                allow_simulator: bool) -> InsiResult:
    """The result of one INSi HTTP answer (``status``, whether it had the simulator header, its body)."""
    if simulator_header and not allow_simulator:
        raise InsiError(SIMULATOR_REFUSED)
    if len(data) > MAX_RESPONSE_BYTES:
        raise InsiProtocolError(f"INSi's answer is larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        root = parse_xml(data)
    except XmlRefused as exc:
        if status >= 500:
            raise InsiUnavailable(f"INSi answered HTTP {status}") from None
        raise InsiProtocolError(f"INSi's answer (HTTP {status}) is refused: {exc}") from None
    if root.tag != q(NS_SOAP, "Envelope"):
        if status >= 500:
            raise InsiUnavailable(f"INSi answered HTTP {status}")
        raise InsiProtocolError(f"INSi's answer (HTTP {status}) is not a SOAP 1.2 envelope")
    header, body = root.find(q(NS_SOAP, "Header")), root.find(q(NS_SOAP, "Body"))
    simulated = simulator_header or (header is not None and header.find(q(NS_SIMULATOR, SIMULATOR_MARKER))
                                     is not None)
    if simulated and not allow_simulator:
        raise InsiError(SIMULATOR_REFUSED)
    if body is None:
        raise InsiProtocolError("INSi's answer has no SOAP Body")
    fault = body.find(q(NS_SOAP, "Fault"))
    if fault is not None:
        raise read_fault(fault)
    if status >= 500:
        raise InsiUnavailable(f"INSi answered HTTP {status}")
    if status != 200:
        raise InsiProtocolError(f"INSi answered HTTP {status} without a SOAP fault")
    relates_to = header.find(q(NS_WSA, "RelatesTo")) if header is not None else None
    if relates_to is not None and (relates_to.text or "").strip() != message_id:
        raise InsiProtocolError("INSi's answer relates to another message (wsa:RelatesTo)")
    result = body.find(f".//{q(NS_RESULTAT, RESULT)}")  # directly in the Body in every public sample
    if result is None:
        raise InsiProtocolError(f"INSi's answer has no {RESULT} in its Body")
    code, identity = read_result(result)
    return InsiResult(code, identity, simulated)


def _tls_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        else:
            context.load_default_certs()
        if cert_file:
            context.load_cert_chain(cert_file, key_file or None)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise InsiError(f"cannot load the INSi TLS certificate, key or trust anchors: {reason}") from None
    return context


def _ssl_reason(exc: ssl.SSLError) -> str:
    reason = exc.reason if isinstance(exc.reason, str) else None
    if reason:
        return reason.lower().replace("_", " ")
    return re.sub(r"\s+", " ", re.sub(r"\(_ssl\.c:[0-9]+\)", "", str(exc))).strip()
