"""The INSi wire format as this project understands it: names, namespaces, field rules, hardened parsing.

The CNAM XSDs (``DESIR_ICIR_EXP_1.5.0.wsdl`` and its schemas) are not public. Every element name and
namespace below was read from public third-party code that talks to INSi (TypeScript and Java
clients, their recorded test exchanges, JAXB classes generated from the WSDL; DOMAIN.md §1.6) and
is kept in the single block of constants below so that it is easy to correct. Points that are
**UNCONFIRMED** against the official specification:

- the ``ContexteLPS`` content (``Id``, ``Temps``, ``Emetteur``, ``LPS/IDAM@R``, ``LPS/Version``,
  ``LPS/Instance``, ``LPS/Nom``) and whether ``ContexteBAM`` is required for a structure certificate
  (we send one with an empty ``COUVERTURE``, as the public clients do);
- the ``MessageID`` form: public clients send ``uuid:<uuid>``; we send ``urn:uuid:<uuid>`` (RFC 4122
  URN, the usual WS-Addressing form). Both are accepted by the simulator;
- ``wsa:To`` (we send it; the public clients do not) and the response action names;
- the carte Vitale matricules as ``NumIdentifiant`` (13 characters) + ``Cle`` (2), as in the JAXB
  ``Matricule`` type of ``INSiRecSans``; that ``INSiRecVit`` uses the same type is inferred;
- the field rules: the nom/prénom pattern ``^[A-Z][A-Z\\-' ]*$`` is what public clients enforce, not
  what INSi documents (one Java client forbids the space in a prénom; we allow it); the date is
  ``YYYY-MM-DD`` with "lunar" dates (month or day ``00``) allowed because the schema type is named
  ``DateLunaire``;
- the answer: ``RESULTAT`` directly in the Body, ``ListePrenom`` holding the birth given names
  separated by spaces, ``INSHISTO`` for former matricules;
- the fault detail ``siram:Erreur`` (``code``, ``severite``) and the subcode values.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from lxml import etree

from ins.errors import TraitError
from ins.nir import control_key, is_valid

# --- Names and namespaces (UNCONFIRMED: see the module docstring) -------------------------------------------
NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
NS_WSA = "http://www.w3.org/2005/08/addressing"
NS_LPS = "urn:siram:lps:ctxlps"
NS_BAM = "urn:siram:bam:ctxbam"
NS_SIRAM = "urn:siram"
NS_RECSANS = "http://www.cnamts.fr/INSiRecSans"
NS_RECVIT = "http://www.cnamts.fr/INSiRecVit"
NS_RESULTAT = "http://www.cnamts.fr/INSiResultat"
NS_SIMULATOR = "urn:dui:insi:simulateur"  # ours: the simulator's header element says it is one

SOAP_CONTENT_TYPE = "application/soap+xml"
SIMULATOR_HTTP_HEADER = "X-INSi-Simulator"
MESSAGE_ID_PREFIX = "urn:uuid:"
RESPONSE_ACTION_SUFFIX = "Response"

LPS_CONTEXT = "ContexteLPS"  # attributes Nature="CTXLPS" Version="01_00"
LPS_NATURE, LPS_VERSION = "CTXLPS", "01_00"
BAM_CONTEXT = "ContexteBAM"  # attribute Version="01_02"
BAM_VERSION = "01_02"
LPS_CHILDREN = ("Id", "Temps", "Emetteur", "LPS")
LPS_SOFTWARE = ("IDAM", "Version", "Instance", "Nom")  # children of LPS; IDAM carries R="4"
LPS_IDAM_R = "4"
BAM_CHILDREN = ("Id", "Temps", "Emetteur", "COUVERTURE")

TRAITS_REQUEST = "RECSANSVITALE"  # in NS_RECSANS
TRAITS_FIELDS = ("NomNaissance", "Prenom", "Sexe", "DateNaissance", "LieuNaissance")
VITALE_REQUEST = "RECVITALE"  # in NS_RECVIT
VITALE_FIELDS = ("MatriculeIndividu", "MatriculeOD", "NomNaissance", "DateNaissance", "RangNaissance")
MATRICULE_PARTS = ("NumIdentifiant", "Cle")

RESULT = "RESULTAT"  # in NS_RESULTAT, and so are all of its descendants
RESULT_CR, RESULT_CODE, RESULT_LABEL = "CR", "CodeCR", "LibelleCR"
RESULT_PERSON, RESULT_ACTIVE, RESULT_HISTORY = "INDIVIDU", "INSACTIF", "INSHISTO"
RESULT_ID, RESULT_OID = "IdIndividu", "OID"
RESULT_TRAITS = "TIQ"
RESULT_TRAIT_FIELDS = ("NomNaissance", "Prenom", "ListePrenom", "Sexe", "DateNaissance", "LieuNaissance")

FAULT_DETAIL_ERROR = "Erreur"  # in NS_SIRAM, attributes code and severite
SIMULATOR_MARKER = "Simulateur"  # in NS_SIMULATOR
# ---------------------------------------------------------------------------------------------------------------

NAME_PATTERN = r"^[A-Z][A-Z\-' ]*$"
_NAME = re.compile(NAME_PATTERN)
_SEX = re.compile(r"^[MF]$")
_LUNAR_DATE = re.compile(r"^[0-9]{4}-(0[0-9]|1[0-2])-([0-2][0-9]|3[01])$")
COG_PATTERN = r"^(?:[0-9]{2}|2[AB])[0-9]{3}$"
_COG = re.compile(COG_PATTERN)
_RANK = re.compile(r"^[1-9]$")


def q(namespace: str, name: str) -> str:
    """The Clark notation ``{namespace}name`` lxml uses for qualified names."""
    return f"{{{namespace}}}{name}"


# --- Names on the wire ---------------------------------------------------------------------------------------
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'", "´": "'", "′": "'"})
_LIGATURES = str.maketrans({"Œ": "OE", "œ": "OE", "Æ": "AE", "æ": "AE", "ß": "SS", "Ø": "O", "ø": "O",
                            "Ł": "L", "ł": "L", "Đ": "D", "đ": "D", "Þ": "TH", "þ": "TH"})
_NOT_ALLOWED = re.compile(r"[^A-Z' -]")


def wire_name(value: str) -> str:
    """A name as INSi wants it: upper-case A-Z, space, hyphen, apostrophe; accents removed.

    Typographic apostrophes become ``'``, ligatures are spelled out, any other character becomes a
    space; spaces are collapsed and removed around hyphens; the result starts and ends with a
    letter. Idempotent; the result is empty when ``value`` holds no letter at all.
    """
    text = value.translate(_APOSTROPHES).translate(_LIGATURES)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = _NOT_ALLOWED.sub(" ", text.upper())
    text = re.sub(r" *- *", "-", re.sub(r" +", " ", text))
    return text.lstrip(" -'").rstrip(" -'")


# --- Request fields and their rules --------------------------------------------------------------------------
@dataclass(frozen=True)
class TraitsFields:
    """The text of each ``RECSANSVITALE`` element."""

    nom: str
    prenom: str
    sexe: str
    date_naissance: str
    lieu_naissance: str | None


@dataclass(frozen=True)
class VitaleFields:
    """The text of each ``RECVITALE`` element; a matricule is ``NumIdentifiant`` + ``Cle`` ("" if absent)."""

    matricule_individu: str
    matricule_od: str
    nom: str
    date_naissance: str
    rang: str


def _name_problem(element: str, value: str) -> str | None:
    if not _NAME.match(value):
        return f"{element} must match {NAME_PATTERN} (upper-case letters, space, hyphen, apostrophe)"
    return None


def _date_problem(value: str) -> str | None:
    if not _LUNAR_DATE.match(value):
        return "DateNaissance must be a date YYYY-MM-DD (month or day 00 allowed for a lunar date)"
    return None


def matricule_problem(element: str, value: str) -> str | None:
    """Why ``value`` (13 characters, or 15 with the key) is not a NIR/NIA, naming ``element`` only."""
    if len(value) == 15:
        return None if is_valid(value) else f"{element} is not a NIR/NIA with a valid key"
    if len(value) == 13:
        try:
            return None if is_valid(value + control_key(value)) else f"{element} is not a NIR/NIA"
        except ValueError:
            return f"{element} is not a NIR/NIA"
    return f"{element} must have 13 characters, or 15 with its key"


def traits_problem(fields: TraitsFields) -> tuple[str, str] | None:
    """The first rule ``fields`` breaks, as (element, message), or None."""
    checks = (
        ("NomNaissance", _name_problem("NomNaissance", fields.nom)),
        ("Prenom", _name_problem("Prenom", fields.prenom)),
        ("Sexe", None if _SEX.match(fields.sexe) else "Sexe must be M or F"),
        ("DateNaissance", _date_problem(fields.date_naissance)),
        ("LieuNaissance", None if fields.lieu_naissance is None or _COG.match(fields.lieu_naissance)
         else "LieuNaissance must be a COG code: 5 characters, 2A/2B for Corsica, 99xxx for a country"),
    )
    return next(((element, message) for element, message in checks if message), None)


def vitale_problem(fields: VitaleFields) -> tuple[str, str] | None:
    """The first rule ``fields`` breaks, as (element, message), or None."""
    individu = fields.matricule_individu
    checks = (
        ("MatriculeIndividu", matricule_problem("MatriculeIndividu", individu) if individu else None),
        ("MatriculeOD", matricule_problem("MatriculeOD", fields.matricule_od)),
        ("NomNaissance", _name_problem("NomNaissance", fields.nom)),
        ("DateNaissance", _date_problem(fields.date_naissance)),
        ("RangNaissance", None if _RANK.match(fields.rang) else "RangNaissance must be a digit from 1 to 9"),
    )
    return next(((element, message) for element, message in checks if message), None)


_QUERY_FIELD = {"NomNaissance": "birth_family", "Prenom": "given", "Sexe": "sex", "DateNaissance": "birth_date",
                "LieuNaissance": "birth_place", "MatriculeIndividu": "nir_individu", "MatriculeOD": "nir_od",
                "RangNaissance": "birth_rank"}


def _refuse(problem: tuple[str, str] | None) -> None:
    if problem is not None:
        element, message = problem
        raise TraitError(_QUERY_FIELD[element], f"INSi query refused before sending: {message}")


def _matricule(value: str) -> str:
    return re.sub(r"\s+", "", value).upper()


def traits_fields(birth_family: str, given: str, sex: str, birth_date: date,
                  birth_place: str | None) -> TraitsFields:
    """The wire fields of a search by traits; ``TraitError`` when one breaks a rule of ``traits_problem``."""
    place = birth_place.strip().upper() if birth_place is not None and birth_place.strip() else None
    fields = TraitsFields(wire_name(birth_family), wire_name(given), sex.strip().upper(), birth_date.isoformat(),
                          place)
    _refuse(traits_problem(fields))
    return fields


def vitale_fields(nir_individu: str, nir_od: str, birth_family: str, birth_date: str, birth_rank: int) -> VitaleFields:
    """The wire fields of a search from a carte Vitale; ``TraitError`` when one breaks a rule."""
    fields = VitaleFields(_matricule(nir_individu), _matricule(nir_od), wire_name(birth_family), birth_date.strip(),
                          str(birth_rank))
    _refuse(vitale_problem(fields))
    return fields


# --- Hardened parsing ----------------------------------------------------------------------------------------
class XmlRefused(ValueError):
    """Bytes that are not one well-formed, DTD-free, UTF-8 XML document."""


_FORBIDDEN = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_ENCODING = re.compile(rb"""^(?:\xef\xbb\xbf)?\s*<\?xml\b[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")
MAX_XML_BYTES = 1 << 20  # an INSi message is a few kilobytes
MAX_XML_DEPTH = 64  # an INSi message nests about ten elements deep


def parse_xml(data: bytes, *, max_bytes: int = MAX_XML_BYTES, max_depth: int = MAX_XML_DEPTH) -> etree._Element:
    """Parse untrusted XML: at most ``max_bytes`` and ``max_depth`` levels, UTF-8 only, no DTD, no entity, no
    network, no huge tree; a DOCTYPE is refused outright (the rules of ``dui.fhir.xmlsafe``)."""
    if len(data) > max_bytes:
        raise XmlRefused(f"larger than {max_bytes} bytes")
    if b"\x00" in data or data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x4c\x6f\xa7\x94")):
        raise XmlRefused("only UTF-8 XML is accepted")
    declared = _ENCODING.match(data)
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        raise XmlRefused("only UTF-8 XML is accepted")
    if _FORBIDDEN.search(data):
        raise XmlRefused("a DOCTYPE or an entity declaration is refused")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                             remove_comments=True, remove_pis=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError:
        raise XmlRefused("not well-formed XML") from None
    if root.getroottree().docinfo.doctype:
        raise XmlRefused("a DOCTYPE is refused")
    stack = [(root, 1)]
    while stack:
        node, level = stack.pop()
        if level > max_depth:
            raise XmlRefused(f"elements are nested deeper than {max_depth} levels")
        stack.extend((child, level + 1) for child in node if isinstance(child.tag, str))
    return root


def text_of(parent: etree._Element, namespace: str, name: str) -> str | None:
    """The stripped text of the first child ``{namespace}name`` of ``parent`` ("" if empty), or None."""
    child = parent.find(q(namespace, name))
    if child is None:
        return None
    return str(child.text or "").strip()
