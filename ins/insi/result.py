"""INSi's answers, the ``RESULTAT`` and the SOAP 1.2 fault: read by the client, written by the simulator.

Element names are in ``ins.insi.wire``. Every check names the element and the rule, never the value:
the values are health data.
"""

from __future__ import annotations

import re
from datetime import date

from lxml import etree

from ins.errors import InsiFault, InsiProtocolError
from ins.insi.client import CR_FOUND, CR_NONE, CR_SEVERAL, INS_OIDS, InsiIdentity
from ins.insi.table import Answer
from ins.insi.wire import (
    COG_PATTERN,
    FAULT_DETAIL_ERROR,
    NAME_PATTERN,
    NS_RESULTAT,
    NS_SIMULATOR,
    NS_SIRAM,
    NS_SOAP,
    NS_WSA,
    RESPONSE_ACTION_SUFFIX,
    RESULT,
    RESULT_ACTIVE,
    RESULT_CODE,
    RESULT_CR,
    RESULT_HISTORY,
    RESULT_ID,
    RESULT_OID,
    RESULT_PERSON,
    RESULT_TRAITS,
    SIMULATOR_MARKER,
    q,
    text_of,
)
from ins.nir import is_valid

_LABELS = {"00": "OK", "01": "Aucune identite trouvee", "02": "Plusieurs identites trouvees"}
_NAME = re.compile(NAME_PATTERN)
_COG = re.compile(COG_PATTERN)
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_SHORT_CODE = re.compile(r"^[0-9A-Za-z_]{1,8}$")


def fault_error(code: str, reason: str) -> InsiFault:
    """The error for a SOAP fault: ``code`` is the fault code path, e.g. ``Receiver/siram_40/insi_102``."""
    return InsiFault(f"INSi answered a SOAP fault [{code}]: {reason}", code, reason)


def _local(qname: str) -> str:
    return qname.rsplit(":", 1)[-1].strip()


def read_fault(fault: etree._Element) -> InsiFault:
    """The ``InsiFault`` of a ``soap:Fault``: its code, subcodes and ``siram:Erreur@code``, and its reason."""
    parts: list[str] = []
    node = fault.find(q(NS_SOAP, "Code"))
    while node is not None:
        value = text_of(node, NS_SOAP, "Value")
        if value:
            parts.append(_local(value))
        node = node.find(q(NS_SOAP, "Subcode"))
    text = fault.find(f"{q(NS_SOAP, 'Reason')}/{q(NS_SOAP, 'Text')}")
    reason = " ".join(str(text.text or "").split()) if text is not None else ""
    error = fault.find(f"{q(NS_SOAP, 'Detail')}/{q(NS_SIRAM, FAULT_DETAIL_ERROR)}")
    if error is not None:
        if error.get("code"):
            parts.append(str(error.get("code")))
        detail = " ".join(str(error.text or "").split())
        if detail:
            reason = f"{reason} ({detail})" if reason else detail
    return fault_error("/".join(parts) or "unknown", reason[:1000] or "no reason given")


def _child(parent: etree._Element, name: str, where: str) -> etree._Element:
    child = parent.find(q(NS_RESULTAT, name))
    if child is None:
        raise InsiProtocolError(f"INSi's {where} has no {name}")
    return child


def _text(parent: etree._Element, name: str, where: str) -> str:
    value = text_of(parent, NS_RESULTAT, name)
    if not value:
        raise InsiProtocolError(f"INSi's {where} has no {name}")
    return value


def _matricule(holder: etree._Element, where: str) -> tuple[str, str]:
    ident = _child(holder, RESULT_ID, where)
    number = _text(ident, "NumIdentifiant", f"{where}/{RESULT_ID}")
    key = text_of(ident, NS_RESULTAT, "Cle") or ""
    matricule = number + key if len(number) == 13 else number
    if not is_valid(matricule):
        raise InsiProtocolError(f"INSi's {where}: the matricule is not a NIR/NIA with a valid key")
    oid = _text(holder, RESULT_OID, where).removeprefix("urn:oid:")
    if oid not in INS_OIDS:
        raise InsiProtocolError(f"INSi's {where}: the OID is not one of the INS OIDs")
    return matricule, oid


def read_result(result: etree._Element) -> tuple[str, InsiIdentity | None]:
    """The CR code of a ``RESULTAT`` and, with ``00``, the identity it carries."""
    code = _text(_child(result, RESULT_CR, RESULT), RESULT_CODE, f"{RESULT}/{RESULT_CR}")
    if code in (CR_NONE, CR_SEVERAL):
        return code, None
    if code != CR_FOUND:
        shown = f" {code}" if _SHORT_CODE.match(code) else ""
        raise InsiProtocolError(f"INSi returned an unexpected CR code{shown}")
    person = _child(result, RESULT_PERSON, RESULT)
    matricule, oid = _matricule(_child(person, RESULT_ACTIVE, RESULT_PERSON), RESULT_ACTIVE)
    previous = tuple(_matricule(h, RESULT_HISTORY) for h in person.findall(q(NS_RESULTAT, RESULT_HISTORY)))
    traits = _child(person, RESULT_TRAITS, RESULT_PERSON)
    family = _text(traits, "NomNaissance", RESULT_TRAITS)
    listed = text_of(traits, NS_RESULTAT, "ListePrenom") or text_of(traits, NS_RESULTAT, "Prenom") or ""
    given = tuple(listed.split())
    if not _NAME.match(family) or not given or not all(_NAME.match(g) for g in given):
        raise InsiProtocolError(f"INSi's {RESULT_TRAITS}: a name does not match {NAME_PATTERN}")
    sex = _text(traits, "Sexe", RESULT_TRAITS)
    if sex not in ("M", "F"):
        raise InsiProtocolError(f"INSi's {RESULT_TRAITS}: Sexe is not M or F")
    born = _text(traits, "DateNaissance", RESULT_TRAITS)
    try:
        if not _ISO_DATE.match(born):
            raise ValueError
        birth_date = date.fromisoformat(born)
    except ValueError:
        raise InsiProtocolError(f"INSi's {RESULT_TRAITS}: DateNaissance is not a calendar date YYYY-MM-DD") from None
    place = _text(traits, "LieuNaissance", RESULT_TRAITS)
    if not _COG.match(place):
        raise InsiProtocolError(f"INSi's {RESULT_TRAITS}: LieuNaissance is not a COG code")
    return code, InsiIdentity(matricule, oid, family, given, sex, birth_date, place, previous)


# --- Writing (the simulator) ------------------------------------------------------------------------------
def _element(parent: etree._Element, namespace: str, name: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, q(namespace, name))
    child.text = text
    return child


def _envelope(action: str | None, relates_to: str | None) -> tuple[etree._Element, etree._Element]:
    envelope = etree.Element(q(NS_SOAP, "Envelope"), nsmap={"soap": NS_SOAP, "wsa": NS_WSA, "sim": NS_SIMULATOR})
    header = _element(envelope, NS_SOAP, "Header")
    if action:
        _element(header, NS_WSA, "Action", action)
    if relates_to:
        _element(header, NS_WSA, "RelatesTo", relates_to)
    _element(header, NS_SIMULATOR, SIMULATOR_MARKER, "true")
    return envelope, _element(envelope, NS_SOAP, "Body")


def _bytes(envelope: etree._Element) -> bytes:
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))


def fault_envelope(code: str, reason: str, subcode: str | None = None, detail_code: str | None = None,
                   detail: str | None = None) -> bytes:
    """A SOAP 1.2 fault as the simulator sends it (``siram:Erreur`` in the Detail when ``detail_code``)."""
    envelope, body = _envelope(f"{NS_WSA}/soap/fault", None)
    fault = _element(body, NS_SOAP, "Fault")
    code_el = _element(fault, NS_SOAP, "Code")
    _element(code_el, NS_SOAP, "Value", f"soap:{code}")
    if subcode:
        _element(_element(code_el, NS_SOAP, "Subcode"), NS_SOAP, "Value", f"soap:{subcode}")
    text = _element(_element(fault, NS_SOAP, "Reason"), NS_SOAP, "Text", reason)
    text.set("{http://www.w3.org/XML/1998/namespace}lang", "fr")
    if detail_code:
        error = etree.SubElement(_element(fault, NS_SOAP, "Detail"), q(NS_SIRAM, FAULT_DETAIL_ERROR),
                                 nsmap={"siram": NS_SIRAM}, severite="fatal", code=detail_code)
        error.text = detail
    return _bytes(envelope)


def result_envelope(action: str, message_id: str, answer: Answer) -> bytes:
    """The ``RESULTAT`` answer of a search."""
    envelope, body = _envelope(action + RESPONSE_ACTION_SUFFIX, message_id)
    result = etree.SubElement(body, q(NS_RESULTAT, "RESULTAT"), nsmap={None: NS_RESULTAT})
    cr = _element(result, NS_RESULTAT, "CR")
    _element(cr, NS_RESULTAT, "CodeCR", answer.code)
    _element(cr, NS_RESULTAT, "LibelleCR", _LABELS[answer.code])
    if answer.code == CR_FOUND and answer.entry is not None:
        person, entry = _element(result, NS_RESULTAT, "INDIVIDU"), answer.entry
        identity = entry.identity
        pairs: list[tuple[str, str, str, str | None]] = [("INSACTIF", identity.matricule, identity.oid, None)]
        pairs += [("INSHISTO", m, oid, entry.kind) for m, oid in identity.previous]
        for element, matricule, oid, kind in pairs:
            holder = _element(person, NS_RESULTAT, element)
            ident = _element(holder, NS_RESULTAT, "IdIndividu")
            _element(ident, NS_RESULTAT, "NumIdentifiant", matricule[:13])
            _element(ident, NS_RESULTAT, "Cle", matricule[13:])
            if kind:
                _element(ident, NS_RESULTAT, "TypeMatricule", kind)
            _element(holder, NS_RESULTAT, "OID", oid)
        traits = _element(person, NS_RESULTAT, "TIQ")
        _element(traits, NS_RESULTAT, "NomNaissance", identity.birth_family)
        _element(traits, NS_RESULTAT, "Prenom", identity.given_names[0])
        _element(traits, NS_RESULTAT, "ListePrenom", " ".join(identity.given_names))
        _element(traits, NS_RESULTAT, "Sexe", identity.sex)
        _element(traits, NS_RESULTAT, "DateNaissance", identity.birth_date.isoformat())
        _element(traits, NS_RESULTAT, "LieuNaissance", identity.birth_place)
    return _bytes(envelope)
