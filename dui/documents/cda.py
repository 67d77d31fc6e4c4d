"""CDA R2 documents of the CI-SIS: the DLU and the FLUDT of the DLU-EHPAD volet (2022.01), and the N1 (XDS-SD).

Pure functions of a ``ResidentRecord`` (and a ``Transfer`` for the FLUDT) and the document's ``DocumentIds``: no
Flask, no database. Every element is written here with lxml, which escapes all text. The three builders return
UTF-8 XML with its declaration.

What the volet asks and this module answers (checked against the ANS TestContenuCDA schematrons in the tests):

- the CI-SIS header: realmCode FR, typeId, the HL7 France, CI-SIS and volet templateIds, the patient named by the
  INS only when the identity is qualified, always by the local identifier, birth and used names with the
  qualifiers of the CI-SIS examples (``BR`` birth, ``CL`` used), the birth date and place;
- the author (the establishment's software, or the coordinating physician when the record names one), the
  custodian (the establishment, by its FINESS), the informants (``NOK`` personne de confiance, ``ECON`` person to
  notify), the GP as ``participant INF / PCP``, the service event (34117-2 DLU, 28651-8 FLUDT) and the encounter of
  the stay in an EHPAD (``SA17``);
- every section of the volet, each with a narrative a human reads and the entries the volet asks for. When the
  record has nothing to say, the section says so in words and in code (the CI-SIS "absent or unknown" codes, or a
  nullFlavor): it never invents a clinical fact.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lxml import etree

from dui.documents.record import Code, Establishment, Identity, Item, Person, ResidentRecord, Transfer

NS = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
_XSI_TYPE = f"{{{XSI}}}type"

# Code systems (CDA OIDs).
LOINC = "2.16.840.1.113883.6.1"
SNOMED = "2.16.840.1.113883.6.96"
ICD10 = "2.16.840.1.113883.6.3"
ATC = "2.16.840.1.113883.6.73"
CIS = "1.2.250.1.213.2.3.1"
UCD = "1.2.250.1.213.2.3.2"
EMDN = "1.2.250.1.213.2.68"
TA_ASIP = "1.2.250.1.213.1.1.4.322"
ABSENT_UNKNOWN = "2.16.840.1.113883.5.1150.1"
RPPS_ROOT = "1.2.250.1.71.4.2.1"
FINESS_ROOT = "1.2.250.1.71.4.2.2"
SECTEUR_ACTIVITE = "1.2.250.1.71.4.2.4"
PRACTICE_SETTING = "1.2.250.1.213.1.1.4.9"
INS_NIR = "1.2.250.1.213.1.4.8"

#: FHIR system URI -> CDA codeSystem OID (``Code.oid`` wins when the record gives one).
SYSTEM_OIDS: dict[str, str] = {
    "http://hl7.org/fhir/sid/icd-10": ICD10,
    "http://hl7.org/fhir/sid/icd-10-fr": ICD10,
    "http://snomed.info/sct": SNOMED,
    "http://loinc.org": LOINC,
    "http://www.whocc.no/atc": ATC,
    "https://smt.esante.gouv.fr/terminologie-cis": CIS,
    "https://smt.esante.gouv.fr/terminologie-ucd": UCD,
    "http://unitsofmeasure.org": "2.16.840.1.113883.6.8",
}

FORMAT_N1_PDF = "urn:ihe:iti:xds-sd:pdf:2008"
FORMAT_DLU = "urn:asip:ci-sis:dlu:2015"
FORMAT_FLUDT = "urn:asip:ci-sis:fludt:2017"

# JDV_ObservationEtatPatient_CISIS (1.2.250.1.213.1.1.5.514), grouped as the DLU form prints them.
STATE_GROUPS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Etat psychique", (
        ("288575003", "capable de communiquer"), ("247663003", "bien orienté"), ("62476001", "désorienté(e)"),
        ("24199005", "sensation d'agitation"), ("248043008", "comportement non-conciliant"),
        ("425104003", "comportement suicidaire"))),
    ("Handicaps / déficits", (
        ("397540003", "malvoyance"), ("15188001", "perte auditive"), ("62305002", "trouble du langage"))),
    ("Déplacements / transferts", (
        ("161898004", "chutes"), ("50239007", "errance"), ("248046000", "fugue"),
        ("386423001", "contention physique"))),
    ("Autres risques", (("285304000", "à risque d'escarre"), ("249492002", "fausse route alimentaire"))),
)
STATE_CODES = {code for _, concepts in STATE_GROUPS for code, _ in concepts}

# JDV_ChecklistDLU_CISIS (1.2.250.1.213.1.1.5.71).
CHECKLIST_DLU: tuple[tuple[str, str], ...] = (
    ("DLU_006", "Attestation de la carte vitale"), ("DLU_007", "Attestation de mutuelle"),
    ("DLU_008", "Photocopie de la carte d’identité"), ("DLU_009", "Grille AGGIR (la plus récente)"),
    ("DLU_010", "Photocopie des directives anticipées"), ("DLU_011", "Photocopies des ordonnances en cours"),
    ("DLU_012", "Tableau d’administration des médicaments"),
    ("DLU_013", "Résultats récents de biologie (1 à 3 mois) avec clairance de la créatinine et INR (si AVK)"),
    ("DLU_014", "CR de la dernière hospitalisation"), ("DLU_015", "Fiche BMR (bactérie multi-résistante)"),
    ("DLU_016", "Fiche ou carnet de suivi des soins (glycémie, pansements, perfusion, ventilation, nutrition, etc.)"),
    ("DLU_017", "Carnet de suivi du pacemaker ou du défibrilateur implentable"),
    ("DLU_018", "Carte de groupe sanguin (si à jour)"), ("DLU_019", "Liste des capacités en soins de l’EHPAD"),
)

# JDV_ProtheseObjetPersonnel_CISIS (1.2.250.1.213.1.1.5.515): words of a device or belonging -> its code.
_DEVICE_WORDS: tuple[tuple[str, Code], ...] = (
    ("lunette", Code("Q021003", "LUNETTES PRÊTES À PORTER (OU LUNETTES MONTÉES)", oid=EMDN)),
    ("dentaire", Code("P0102", "PROTHÈSES DENTAIRES", oid=EMDN)),
    ("dentier", Code("P0102", "PROTHÈSES DENTAIRES", oid=EMDN)),
    ("auditi", Code("Y2145", "DISPOSITIFS ACCOUSTIQUES D'AIDE À L'AUDITION", oid=EMDN)),
)
_OTHER_DEVICE = Code("GEN-092.02.01", "Autre dispositif ou objet personnel", oid=TA_ASIP)

# Consciousness at transfer (FLUDT, section Résultats d'examens): TA_ASIP DLU_002..004.
CONSCIOUSNESS: dict[str, str] = {
    "DLU_002": "Conscient et éveillé",
    "DLU_003": "Eveillable",
    "DLU_004": "Non éveillable",
}

_VITALS: dict[str, tuple[str, str]] = {  # LOINC -> label, UCUM unit
    "8867-4": ("Fréquence cardiaque", "/min"),
    "8310-5": ("Température corporelle", "Cel"),
    "29463-7": ("Poids", "kg"),
    "8480-6": ("Pression artérielle systolique", "mm[Hg]"),
    "8462-4": ("Pression artérielle diastolique", "mm[Hg]"),
    "9279-1": ("Fréquence respiratoire", "/min"),
    "59408-5": ("Saturation en oxygène", "%"),
    "8302-2": ("Taille", "cm"),
}

_GENDER = {"female": ("F", "Féminin"), "male": ("M", "Masculin")}


@dataclass(frozen=True)
class DocumentIds:
    """What identifies one version of one document, and what the record does not know about its making.

    ``root`` is the producing system's OID for document ids; ``extension`` is unique per document version and
    ``set_extension`` stable per resident and kind (the setId); ``version`` is the versionNumber; ``effective``
    (aware) the time of the document. ``author_system`` names the software that writes it (the
    assignedAuthoringDevice), ``author_system_version`` its version when known. ``confidentiality`` is the HL7
    Confidentiality code (N, R or V)."""

    root: str
    extension: str
    set_extension: str
    version: int
    effective: datetime
    author_system: str = "DUI"
    author_system_version: str | None = None
    confidentiality: str = "N"

    def __post_init__(self) -> None:
        if self.effective.tzinfo is None or self.effective.utcoffset() is None:
            raise ValueError("DocumentIds.effective must be an aware datetime")
        if self.version < 1:
            raise ValueError("DocumentIds.version starts at 1")
        if self.confidentiality not in ("N", "R", "V"):
            raise ValueError("confidentiality is N, R or V")


# --------------------------------------------------------------------------------------------------------------
# Public builders


def dlu(record: ResidentRecord, ids: DocumentIds) -> bytes:
    """The Dossier de liaison d'urgence (CI-SIS DLU-EHPAD-DLU 2022.01) of ``record``."""
    doc = _Doc(record, ids)
    root = doc.header(
        volet=("1.2.250.1.213.1.1.1.22", "2022.01"),
        code=("74207-2", "Dossier de liaison d'urgence"),
        title="Document de liaison d'urgence",
        service=("34117-2", "Historique et clinique"),
    )
    body = doc.structured_body(root)
    doc.dispositions(body)
    doc.problems(body, "pathologies", record.pathologies)
    doc.problems(body, "antecedents", record.antecedents)
    doc.allergies(body)
    doc.treatments(body, record.treatments, "Traitements au long cours")
    doc.palliative(body)
    doc.directives(body)
    doc.state(body)
    doc.results_dlu(body)
    doc.vaccinations(body)
    doc.comment(body, record.comment)
    doc.attached(body)
    return _serialize(root)


def fludt(record: ResidentRecord, transfer: Transfer, ids: DocumentIds) -> bytes:
    """The Fiche de liaison d'urgence - transfert (CI-SIS DLU-EHPAD-FLUDT 2022.01) of ``record`` for ``transfer``."""
    doc = _Doc(record, ids)
    root = doc.header(
        volet=("1.2.250.1.213.1.1.1.23", "2022.01"),
        code=("74207-2", "Dossier de liaison d'urgence"),
        title="Fiche de liaison d'urgence : transfert de l'EHPAD vers le service des urgences",
        service=("28651-8", "Transfert du patient au service des urgences"),
    )
    body = doc.structured_body(root)
    doc.transfer_events(body, transfer)
    doc.vital_signs(body)
    doc.results_fludt(body, transfer)
    doc.treatments(body, record.treatments, "Traitements en cours")
    doc.last_meal(body, transfer)
    doc.devices(body, transfer)
    comment = "\n".join(c for c in (transfer.comment, record.comment) if c) or None
    doc.comment(body, comment)
    return _serialize(root)


def n1(record: ResidentRecord, ids: DocumentIds, pdf: bytes, title: str, type_code: Code,
       class_code: Code | None = None) -> bytes:
    """An unstructured document (CI-SIS N1, IHE XDS-SD): the PDF ``pdf`` in a ``nonXMLBody``, base64.

    ``type_code`` is the LOINC type of the document (its ``code``); ``class_code`` (the XDS classCode,
    JDV_J57) is metadata of the submission, not of the CDA: it is accepted for symmetry and not written."""
    del class_code  # the classCode is carried by the XDS metadata; CDA has no place for it
    if not pdf.startswith(b"%PDF"):
        raise ValueError("n1: the document must be a PDF")
    doc = _Doc(record, ids)
    root = doc.header(
        volet=("1.3.6.1.4.1.19376.1.2.20", None),
        code=(type_code.code, type_code.display, _oid(type_code) or LOINC),
        title=title,
        service=None,
    )
    component = _el(root, "component")
    body = _el(component, "nonXMLBody")
    text = _el(body, "text", mediaType="application/pdf", representation="B64")
    text.text = base64.b64encode(pdf).decode("ascii")
    return _serialize(root)


# --------------------------------------------------------------------------------------------------------------
# Helpers


def _el(parent: Any, tag: str, text: str | None = None, **attrs: str | None) -> Any:
    """A child element in the CDA namespace; attributes whose value is None are left out."""
    element = etree.SubElement(parent, f"{{{NS}}}{tag}")
    for key, value in attrs.items():
        if value is not None:
            element.set(_XSI_TYPE if key == "xsi_type" else key, value)
    if text is not None:
        element.text = _clean(text)
    return element


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: str) -> str:
    """XML 1.0 cannot carry control characters: they are dropped (lxml escapes the rest)."""
    return _CONTROL.sub("", text)


def _serialize(root: Any) -> bytes:
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def _ts(value: datetime) -> str:
    """An HL7 TS with seconds and offset: 20200327153500+0100."""
    return value.strftime("%Y%m%d%H%M%S%z")


_FHIR_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$")


def fhir_ts(value: str | None) -> str | None:
    """A FHIR date or dateTime as an HL7 TS of the same precision (None when it is not one)."""
    if not value:
        return None
    match = _FHIR_DATE.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    out = year + (month or "") + (day or "")
    if hour:
        out += hour + minute + (second or "00")
        if zone:
            out += "+0000" if zone == "Z" else zone.replace(":", "")
    return out


def _fr_date(value: str | None) -> str:
    """A FHIR date or dateTime as a French reader writes it: 27/03/2020 (empty when unknown)."""
    ts = fhir_ts(value)
    if not ts:
        return ""
    parts = [ts[6:8], ts[4:6], ts[0:4]]
    return "/".join(p for p in parts if p)


def _oid(code: Code) -> str | None:
    if code.oid:
        return code.oid
    if code.system:
        if code.system.startswith("urn:oid:"):
            return code.system[len("urn:oid:"):]
        return SYSTEM_OIDS.get(code.system.rstrip("/"))
    return None


def _person_name(parent: Any, family: str | None, given: str | None) -> None:
    name = _el(parent, "name")
    if given:
        _el(name, "given", given)
    _el(name, "family", family or "")


def _rpps(value: str) -> str:
    """The national id of a professional in CDA: 8 + the 11-digit RPPS (an idNat already prefixed is kept)."""
    return "8" + value if len(value) == 11 and value.isdigit() else value


def _finess_id(parent: Any, establishment: Establishment) -> None:
    _el(parent, "id", root=FINESS_ROOT, extension="1" + establishment.finess)


_HOUSE = re.compile(r"^\s*(\d+(?:\s*(?:bis|ter|quater|[a-dA-D]))?)[\s,]+(.+)$")


def _addr_establishment(parent: Any, establishment: Establishment) -> None:
    """A structured address (the CI-SIS takes either street lines alone or the parts; the parts are kept)."""
    if not (establishment.line or establishment.postal or establishment.city):
        _el(parent, "addr", nullFlavor="NASK")
        return
    addr = _el(parent, "addr")
    if establishment.line:
        match = _HOUSE.match(establishment.line)
        if match:
            _el(addr, "houseNumber", match.group(1))
            _el(addr, "streetName", match.group(2))
        else:
            _el(addr, "streetName", establishment.line)
    if establishment.postal:
        _el(addr, "postalCode", establishment.postal)
    if establishment.city:
        _el(addr, "city", establishment.city)


def _telecom(parent: Any, phone: str | None, use: str = "WP") -> None:
    if phone:
        _el(parent, "telecom", value="tel:" + re.sub(r"[^0-9+]", "", phone), use=use)
    else:
        _el(parent, "telecom", nullFlavor="NASK")


def _practice_setting(parent: Any) -> None:
    _el(parent, "standardIndustryClassCode", code="ETABLISSEMENT", displayName="Etablissement de santé",
        codeSystem=PRACTICE_SETTING, codeSystemName="practiceSettingCode")


def _organization(parent: Any, tag: str, establishment: Establishment, setting: bool = True) -> Any:
    org = _el(parent, tag)
    _finess_id(org, establishment)
    _el(org, "name", establishment.name)
    _telecom(org, establishment.phone)
    _addr_establishment(org, establishment)
    if setting:
        _practice_setting(org)
    return org


def _code(parent: Any, tag: str, code: Code | None, ref: str | None = None, **attrs: str | None) -> Any:
    """A coded element from ``code``; without a code (or without a known code system) a nullFlavor code whose
    originalText points at the narrative."""
    system = _oid(code) if code else None
    if code and system:
        element = _el(parent, tag, code=code.code, displayName=code.display or None, codeSystem=system, **attrs)
    else:
        element = _el(parent, tag, nullFlavor="UNK" if code is None else "OTH", **attrs)
    if ref:
        original = _el(element, "originalText")
        _el(original, "reference", value="#" + ref)
    return element


def _product_code(material: Any, code: Code | None, ref: str, absent: tuple[str, str] | None = None) -> None:
    """The code of a FR-Produit-de-sante: CIS in ``code`` itself; any other system (ATC, UCD...) as a translation
    of a ``nullFlavor="OTH"`` code; the CI-SIS "absent or unknown" code likewise, under ``nullFlavor="NI"``."""
    system = _oid(code) if code else None
    if code and system == CIS:
        element = _el(material, "code", code=code.code, displayName=code.display or None, codeSystem=CIS,
                      codeSystemName="CIS")
    else:
        element = _el(material, "code", nullFlavor="OTH" if code and system else "NI" if absent else "UNK")
    _el(_el(element, "originalText"), "reference", value="#" + ref)
    if code and system and system != CIS:
        _el(element, "translation", code=code.code, displayName=code.display or None, codeSystem=system)
    elif absent:
        _el(element, "translation", code=absent[0], displayName=absent[1], codeSystem=ABSENT_UNKNOWN)


def _ivl(parent: Any, tag: str, start: str | None, end: str | None, open_high: bool = False,
         **attrs: str | None) -> Any:
    """An interval; an unknown start is ``low nullFlavor="UNK"``; an unknown end is left out, or written
    ``high nullFlavor="UNK"`` when ``open_high`` (where a template wants both bounds)."""
    element = _el(parent, tag, **attrs)
    low, high = fhir_ts(start), fhir_ts(end)
    if low:
        _el(element, "low", value=low)
    else:
        _el(element, "low", nullFlavor="UNK")
    if high:
        _el(element, "high", value=high)
    elif open_high:
        _el(element, "high", nullFlavor="UNK")
    return element


def _text_ref(parent: Any, ref: str) -> None:
    text = _el(parent, "text")
    _el(text, "reference", value="#" + ref)


def _yes_no(value: bool | None) -> str:
    return "non renseigné" if value is None else ("oui" if value else "non")


def _bl(parent: Any, value: bool | None) -> None:
    if value is None:
        _el(parent, "value", xsi_type="BL", nullFlavor="NI")
    else:
        _el(parent, "value", xsi_type="BL", value="true" if value else "false")


_NEGATIVE = {"non", "no", "false", "absent", "négatif", "negatif"}


def _item_value(item: Item) -> bool:
    """An item of ``state`` or ``results`` says the finding is there, unless its detail says no."""
    return (item.detail or "").strip().lower() not in _NEGATIVE


class _Table:
    """The narrative table of a section: a header row, then one row per line."""

    def __init__(self, text: Any, headers: Sequence[str], caption: str | None = None) -> None:
        self.table = _el(text, "table", border="0")
        if caption:
            _el(self.table, "caption", caption)
        head = _el(_el(self.table, "thead"), "tr")
        for header in headers:
            _el(head, "th", header)
        self.body = _el(self.table, "tbody")

    def row(self, *cells: str | tuple[str, str]) -> None:
        """Cells are text, or (text, ID) for the cell an entry points at."""
        tr = _el(self.body, "tr")
        for cell in cells:
            td = _el(tr, "td")
            if isinstance(cell, tuple):
                _el(td, "content", cell[0], ID=cell[1])
            else:
                td.text = _clean(cell)


# --------------------------------------------------------------------------------------------------------------
# The document


class _Doc:
    """One document being written: the record, the ids, and a counter for narrative IDs and entry ids."""

    def __init__(self, record: ResidentRecord, ids: DocumentIds) -> None:
        self.record = record
        self.ids = ids
        self.effective = _ts(ids.effective)
        self._count = 0

    def uid(self) -> str:
        """An entry id: a UUID derived from the document id, so the same document is written the same way."""
        self._count += 1
        return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{self.ids.root}.{self.ids.extension}#{self._count}")).upper()

    def ref(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}-{self._count}"

    # ---- header

    def header(self, volet: tuple[str, str | None], code: tuple[str, ...], title: str,
               service: tuple[str, str] | None) -> Any:
        record, ids = self.record, self.ids
        root = etree.Element(f"{{{NS}}}ClinicalDocument", nsmap={None: NS, "xsi": XSI})
        _el(root, "realmCode", code="FR")
        _el(root, "typeId", root="2.16.840.1.113883.1.3", extension="POCD_HD000040")
        _el(root, "templateId", root="2.16.840.1.113883.2.8.2.1")
        _el(root, "templateId", root="1.2.250.1.213.1.1.1.1")
        _el(root, "templateId", root=volet[0], extension=volet[1])
        _el(root, "id", root=ids.root, extension=ids.extension)
        _el(root, "code", code=code[0], displayName=code[1], codeSystem=code[2] if len(code) > 2 else LOINC)
        _el(root, "title", title)
        _el(root, "effectiveTime", value=self.effective)
        _el(root, "confidentialityCode", code=ids.confidentiality, codeSystem="2.16.840.1.113883.5.25",
            displayName={"N": "Normal", "R": "Restreint", "V": "Très restreint"}[ids.confidentiality])
        _el(root, "languageCode", code="fr-FR")
        _el(root, "setId", root=ids.root, extension=ids.set_extension)
        _el(root, "versionNumber", value=str(ids.version))
        self.record_target(root, record.identity)
        self.author(root)
        for person in record.notify:
            self.informant(root, person, "ECON")
        for person in record.trusted:
            self.informant(root, person, "NOK")
        custodian = _el(root, "custodian")
        assigned = _el(custodian, "assignedCustodian")
        _organization(assigned, "representedCustodianOrganization", record.establishment, setting=False)
        self.legal_authenticator(root)
        if service is not None:
            self.gp(root)
        self.documentation_of(root, service)
        self.encounter(root)
        return root

    def record_target(self, root: Any, identity: Identity) -> None:
        role = _el(_el(root, "recordTarget"), "patientRole")
        if identity.ins:
            _el(role, "id", root=identity.ins_oid or INS_NIR, extension=identity.ins)
        _el(role, "id", root=identity.local_oid, extension=identity.local_id)
        lines = [line for line in identity.address if line.strip()]
        if lines:
            addr = _el(role, "addr", use="H")
            for line in lines:
                _el(addr, "streetAddressLine", line)
        if identity.phone:
            _telecom(role, identity.phone, use="H")
        patient = _el(role, "patient", classCode="PSN")
        name = _el(patient, "name")
        _el(name, "family", identity.birth_family, qualifier="BR")
        _el(name, "given", identity.birth_given)
        _el(name, "given", identity.first_given, qualifier="BR")
        if identity.used_family:
            _el(name, "family", identity.used_family, qualifier="CL")
        if identity.used_given:
            _el(name, "given", identity.used_given, qualifier="CL")
        gender, label = _GENDER.get(identity.sex, ("U", "Inconnu"))
        _el(patient, "administrativeGenderCode", code=gender, displayName=label, codeSystem="2.16.840.1.113883.5.1")
        _el(patient, "birthTime", value=identity.birth_date.strftime("%Y%m%d"))
        if identity.birth_place_code or identity.birth_place:
            addr = _el(_el(_el(patient, "birthplace"), "place"), "addr")
            if identity.birth_place_code:
                _el(addr, "county", identity.birth_place_code)
            if identity.birth_place:
                _el(addr, "city", identity.birth_place)

    def author(self, root: Any) -> None:
        """The coordinating physician when the record names one with an RPPS, else the establishment's
        software; either way on behalf of the establishment."""
        record = self.record
        author = _el(root, "author")
        _el(author, "time", value=self.effective)
        assigned = _el(author, "assignedAuthor")
        physician = record.coordinator if record.coordinator and record.coordinator.rpps else None
        if physician is not None:
            assert physician.rpps is not None
            _el(assigned, "id", root=RPPS_ROOT, extension=_rpps(physician.rpps))
            _el(assigned, "code", code="G15_10", displayName="Médecin", codeSystem="1.2.250.1.213.1.1.4.5")
            _addr_establishment(assigned, record.establishment)
            _telecom(assigned, physician.phone or record.establishment.phone)
            _person_name(_el(assigned, "assignedPerson"), physician.family, physician.given)
        else:
            _el(assigned, "id", root=self.ids.root, extension=self.ids.author_system)
            _el(assigned, "code", code="LOGICIEL_DUI", displayName="Logiciel de Dossier Usager Informatisé",
                codeSystem="1.2.250.1.213.1.1.4.6")
            _addr_establishment(assigned, record.establishment)
            _telecom(assigned, record.establishment.phone)
            device = _el(assigned, "assignedAuthoringDevice")
            _el(device, "manufacturerModelName", self.ids.author_system)
            _el(device, "softwareName", " ".join(
                p for p in (self.ids.author_system, self.ids.author_system_version) if p))
        _organization(assigned, "representedOrganization", record.establishment)

    def informant(self, root: Any, person: Person, kind: str) -> None:
        entity = _el(_el(root, "informant"), "relatedEntity", classCode=kind)
        _el(entity, "addr", nullFlavor="NASK")
        _telecom(entity, person.phone, use="MC")
        _person_name(_el(entity, "relatedPerson"), person.family, person.given)

    def legal_authenticator(self, root: Any) -> None:
        """The coordinating physician answers for the document when the record names one with an RPPS; else
        the establishment itself, by its FINESS (the CI-SIS header requires a legalAuthenticator)."""
        physician = self.record.coordinator
        legal = _el(root, "legalAuthenticator")
        _el(legal, "time", value=self.effective)
        _el(legal, "signatureCode", code="S")
        entity = _el(legal, "assignedEntity")
        if physician is not None and physician.rpps:
            _el(entity, "id", root=RPPS_ROOT, extension=_rpps(physician.rpps))
            _person_name(_el(entity, "assignedPerson"), physician.family, physician.given)
        else:
            _finess_id(entity, self.record.establishment)
        _organization(entity, "representedOrganization", self.record.establishment)

    def gp(self, root: Any) -> None:
        """The médecin traitant: participant INF, functionCode PCP (required by the volet, even when unknown)."""
        gp = self.record.gp
        participant = _el(root, "participant", typeCode="INF")
        _el(participant, "functionCode", code="PCP", displayName="Médecin Traitant",
            codeSystem="2.16.840.1.113883.5.88")
        time = _el(participant, "time", xsi_type="IVL_TS")
        _el(time, "low", value=self.effective)
        entity = _el(participant, "associatedEntity", classCode="PROV")
        if gp is None:  # no médecin traitant in the record: the participant says it does not know who
            _el(entity, "addr", nullFlavor="UNK")
            _el(entity, "telecom", nullFlavor="UNK")
            name = _el(_el(entity, "associatedPerson"), "name")
            _el(name, "family", nullFlavor="UNK")
            return
        if gp.rpps:  # an id, when there is one, has both root and extension (CI-SIS)
            _el(entity, "id", root=RPPS_ROOT, extension=_rpps(gp.rpps))
        _el(entity, "addr", nullFlavor="NASK")
        _telecom(entity, gp.phone)
        _person_name(_el(entity, "associatedPerson"), gp.family, gp.given)

    def documentation_of(self, root: Any, service: tuple[str, str] | None) -> None:
        event = _el(_el(root, "documentationOf"), "serviceEvent")
        if service is not None:
            _el(event, "code", code=service[0], displayName=service[1], codeSystem=LOINC, codeSystemName="LOINC")
        time = _el(event, "effectiveTime")
        _el(time, "low", value=self.effective)
        performer = _el(event, "performer", typeCode="PRF")
        entity = _el(performer, "assignedEntity")
        physician = self.record.coordinator
        if physician is not None and physician.rpps:
            _el(entity, "id", root=RPPS_ROOT, extension=_rpps(physician.rpps))
            _person_name(_el(entity, "assignedPerson"), physician.family, physician.given)
        else:
            _el(entity, "id", root=FINESS_ROOT, extension="1" + self.record.establishment.finess)
        _organization(entity, "representedOrganization", self.record.establishment)

    def encounter(self, root: Any) -> None:
        encounter = _el(_el(root, "componentOf"), "encompassingEncounter")
        _el(encounter, "code", code="IMP", displayName="Hospitalisation (établissement, y compris HAD)",
            codeSystem="2.16.840.1.113883.5.4", codeSystemName="HL7:ActEncounterCode")
        time = _el(encounter, "effectiveTime")
        start = fhir_ts(self.record.stay_start)
        if start:
            _el(time, "low", value=start)
        else:
            _el(time, "low", nullFlavor="UNK")
        facility = _el(_el(encounter, "location"), "healthCareFacility")
        _el(facility, "code", code="SA17", displayName="Etablissement pour personnes âgées",
            codeSystem=SECTEUR_ACTIVITE)

    # ---- body

    def structured_body(self, root: Any) -> Any:
        return _el(_el(root, "component"), "structuredBody")

    def section(self, body: Any, templates: Iterable[str], code: tuple[str, str], title: str,
                with_id: bool = True) -> tuple[Any, Any]:
        """A section and its (empty) narrative ``text``."""
        section = _el(_el(body, "component"), "section")
        for template in templates:
            _el(section, "templateId", root=template)
        if with_id:
            _el(section, "id", root=self.uid())
        _el(section, "code", code=code[0], displayName=code[1], codeSystem=LOINC, codeSystemName="LOINC")
        _el(section, "title", title)
        return section, _el(section, "text")

    def simple_observation(self, section: Any, code: Code | None, ref: str, value: bool | None,
                           extra_templates: Sequence[str] = (), time: str | None = None) -> Any:
        obs = _el(_el(section, "entry"), "observation", classCode="OBS", moodCode="EVN")
        _el(obs, "templateId", root="1.3.6.1.4.1.19376.1.5.3.1.4.13")
        _el(obs, "templateId", root="1.2.250.1.213.1.1.3.48")
        for template in extra_templates:
            _el(obs, "templateId", root=template)
        _el(obs, "id", root=self.uid())
        _code(obs, "code", code)
        _text_ref(obs, ref)
        _el(obs, "statusCode", code="completed")
        if time:
            _el(obs, "effectiveTime", value=time)
        else:
            _el(obs, "effectiveTime", nullFlavor="NA")
        _bl(obs, value)
        return obs

    # DLU sections

    def dispositions(self, body: Any) -> None:
        record = self.record
        section, text = self.section(
            body, ("1.3.6.1.4.1.19376.1.5.3.1.1.13.2.10", "1.2.250.1.213.1.1.2.172"),
            ("11302-7", "Etablissement de santé de préférence"), "Etablissement de santé de préférence")
        ref = self.ref("disposition")
        para = _el(text, "paragraph")
        _el(para, "content", record.preferred_hospital or "Non renseigné", ID=ref)
        if record.dispositions:
            lst = _el(text, "list")
            for item in record.dispositions:
                _el(lst, "item", item.text + (f" ({item.detail})" if item.detail else ""))
        act = _el(_el(section, "entry"), "act", classCode="ACT", moodCode="INT")
        _el(act, "templateId", root="1.3.6.1.4.1.19376.1.5.3.1.1.10.4.2")
        _el(act, "templateId", root="1.2.250.1.213.1.1.3.97")
        _el(act, "id", root=self.uid())
        _el(act, "code", code="11302-7", displayName="Etablissement de santé de préférence", codeSystem=LOINC,
            codeSystemName="LOINC")
        _text_ref(act, ref)
        _el(act, "statusCode", code="normal")
        _el(act, "effectiveTime", nullFlavor="NAV")
        if record.preferred_hospital:
            participant = _el(act, "participant", typeCode="DST")
            _el(participant, "time", nullFlavor="NAV")
            role = _el(participant, "participantRole", classCode="ROL")
            _el(role, "id", nullFlavor="NAV")
            _el(role, "addr", nullFlavor="NAV")
            _el(role, "telecom", nullFlavor="NAV")
            entity = _el(role, "playingEntity")
            _el(entity, "name", record.preferred_hospital)

    def problems(self, body: Any, kind: str, items: Sequence[Item]) -> None:
        if kind == "pathologies":
            templates: tuple[str, ...] = ("2.16.840.1.113883.10.20.1.11", "1.3.6.1.4.1.19376.1.5.3.1.3.6",
                                          "1.2.250.1.213.1.1.2.132")
            code, title, prefix = ("11450-4", "Liste des problèmes actifs"), "Pathologies en cours", "pathologie"
        else:
            templates = ("1.3.6.1.4.1.19376.1.5.3.1.3.8", "1.2.250.1.213.1.1.2.134")
            code, title, prefix = ("11348-0", "Antécédents médicaux"), "Antécédents médicaux", "antecedent"
        section, text = self.section(body, templates, code, title)
        table = _Table(text, ("Date de début", "Date de fin", "Problème", "Précision"))
        if not items:
            ref = self.ref(prefix)
            table.row("", "", ("Pas d'information sur les problèmes", ref), "")
            self.problem_concern(section, None, ref)
            return
        for item in items:
            ref = self.ref(prefix)
            table.row(_fr_date(item.start), _fr_date(item.end), (item.text, ref), item.detail or "")
            self.problem_concern(section, item, ref)

    def problem_concern(self, section: Any, item: Item | None, ref: str) -> None:
        act = _el(_el(section, "entry"), "act", classCode="ACT", moodCode="EVN")
        for template in ("2.16.840.1.113883.10.20.1.27", "1.3.6.1.4.1.19376.1.5.3.1.4.5.1",
                         "1.3.6.1.4.1.19376.1.5.3.1.4.5.2", "1.2.250.1.213.1.1.3.39"):
            _el(act, "templateId", root=template)
        _el(act, "id", root=self.uid())
        _el(act, "code", nullFlavor="NA")
        ended = item is not None and item.end is not None
        _el(act, "statusCode", code="completed" if ended else "active")
        if ended:
            assert item is not None
            _ivl(act, "effectiveTime", item.start, item.end)
        else:
            _ivl(act, "effectiveTime", item.start if item else None, None)
        rel = _el(act, "entryRelationship", typeCode="SUBJ", inversionInd="false")
        obs = _el(rel, "observation", classCode="OBS", moodCode="EVN", negationInd="false")
        for template in ("2.16.840.1.113883.10.20.1.28", "1.3.6.1.4.1.19376.1.5.3.1.4.5",
                         "1.2.250.1.213.1.1.3.37"):
            _el(obs, "templateId", root=template)
        _el(obs, "id", root=self.uid())
        _el(obs, "code", code="282291009", displayName="interprétation diagnostique", codeSystem=SNOMED,
            codeSystemName="SNOMED CT")
        _text_ref(obs, ref)
        _el(obs, "statusCode", code="completed")
        _ivl(obs, "effectiveTime", item.start if item else None, item.end if item else None)
        if item is None:
            value = _el(obs, "value", xsi_type="CD", code="no-problem-info",
                        displayName="Pas d'information sur les problèmes", codeSystem=ABSENT_UNKNOWN)
            original = _el(value, "originalText")
            _el(original, "reference", value="#" + ref)
        else:
            _code(obs, "value", item.code, ref, xsi_type="CD")

    def allergies(self, body: Any) -> None:
        items = self.record.allergies
        section, text = self.section(
            body, ("2.16.840.1.113883.10.20.1.2", "1.3.6.1.4.1.19376.1.5.3.1.3.13", "1.2.250.1.213.1.1.2.137"),
            ("48765-2", "Allergies et hypersensibilités"), "Allergies et hypersensibilités")
        table = _Table(text, ("Date de début", "Date de fin", "Agent", "Réaction, criticité"))
        act = _el(_el(section, "entry"), "act", classCode="ACT", moodCode="EVN")
        for template in ("2.16.840.1.113883.10.20.1.27", "1.3.6.1.4.1.19376.1.5.3.1.4.5.1",
                         "1.3.6.1.4.1.19376.1.5.3.1.4.5.3", "1.2.250.1.213.1.1.3.40"):
            _el(act, "templateId", root=template)
        _el(act, "id", root=self.uid())
        _el(act, "code", nullFlavor="NA")
        _el(act, "statusCode", code="active")
        _ivl(act, "effectiveTime", None, None)
        rows: Sequence[Item | None] = items or (None,)
        # None recorded: "no known allergy" when the record says so, else "no information" (JDV_AbsentOrUnknownAllergy)
        absent = (("no-known-allergies", "Pas d'allergie connue") if self.record.no_known_allergy else
                  ("no-allergy-info", "Pas d'information sur les allergies/hypersensibilités"))
        for item in rows:
            ref = self.ref("allergie")
            if item is None:
                table.row("", "", (absent[1], ref), "")
            else:
                table.row(_fr_date(item.start), _fr_date(item.end), (item.text, ref), item.detail or "")
            rel = _el(act, "entryRelationship", typeCode="SUBJ", inversionInd="false")
            obs = _el(rel, "observation", classCode="OBS", moodCode="EVN")
            for template in ("2.16.840.1.113883.10.20.1.18", "2.16.840.1.113883.10.20.1.28",
                             "1.3.6.1.4.1.19376.1.5.3.1.4.5", "1.3.6.1.4.1.19376.1.5.3.1.4.6",
                             "1.2.250.1.213.1.1.3.41"):
                _el(obs, "templateId", root=template)
            _el(obs, "id", root=self.uid())
            _el(obs, "code", code="420134006", displayName="propension aux réactions indésirables",
                codeSystem=SNOMED, codeSystemName="SNOMED CT")
            _text_ref(obs, ref)
            _el(obs, "statusCode", code="completed")
            _ivl(obs, "effectiveTime", item.start if item else None, item.end if item else None)
            if item is None:
                value = _el(obs, "value", xsi_type="CD", code=absent[0], displayName=absent[1],
                            codeSystem=ABSENT_UNKNOWN)
            else:
                value = _el(obs, "value", xsi_type="CD", nullFlavor="UNK")
            original = _el(value, "originalText")
            _el(original, "reference", value="#" + ref)
            if item is not None:
                participant = _el(obs, "participant", typeCode="CSM")
                role = _el(participant, "participantRole", classCode="MANU")
                entity = _el(role, "playingEntity", classCode="MMAT")
                _code(entity, "code", item.code, ref)
                _el(entity, "name", item.text)

    def treatments(self, body: Any, items: Sequence[Item], title: str) -> None:
        section, text = self.section(
            body, ("2.16.840.1.113883.10.20.1.8", "1.3.6.1.4.1.19376.1.5.3.1.3.19", "1.2.250.1.213.1.1.2.143"),
            ("10160-0", "Historique de la prise médicamenteuse"), title)
        table = _Table(text, ("Date de début", "Date de fin", "Médicament", "Posologie"))
        rows: Sequence[Item | None] = items or (None,)
        for item in rows:
            ref = self.ref("traitement")
            if item is None:
                table.row("", "", ("Pas d'information sur les traitements médicamenteux", ref), "")
            else:
                table.row(_fr_date(item.start), _fr_date(item.end), (item.text, ref), item.detail or "")
            sbadm = _el(_el(section, "entry"), "substanceAdministration", classCode="SBADM", moodCode="INT")
            for template in ("2.16.840.1.113883.10.20.1.24", "1.3.6.1.4.1.19376.1.5.3.1.4.7",
                             "1.2.250.1.213.1.1.3.42", "1.3.6.1.4.1.19376.1.5.3.1.4.7.1"):
                _el(sbadm, "templateId", root=template)
            _el(sbadm, "id", root=self.uid())
            _text_ref(sbadm, ref)
            _el(sbadm, "statusCode", code="completed")
            _ivl(sbadm, "effectiveTime", item.start if item else None, item.end if item else None,
                 xsi_type="IVL_TS", open_high=True)
            _el(sbadm, "doseQuantity", nullFlavor="UNK")
            product = _el(_el(sbadm, "consumable", typeCode="CSM"), "manufacturedProduct")
            for template in ("2.16.840.1.113883.10.20.1.53", "1.3.6.1.4.1.19376.1.5.3.1.4.7.2",
                             "1.2.250.1.213.1.1.3.43"):
                _el(product, "templateId", root=template)
            material = _el(product, "manufacturedMaterial", classCode="MMAT")
            if item is None:
                _product_code(material, None, ref,
                              ("no-medication-info", "Pas d'information sur les traitements médicamenteux"))
                _el(material, "name", nullFlavor="NA")
            else:
                _product_code(material, item.code, ref)
                _el(material, "name", item.text)

    def palliative(self, body: Any) -> None:
        """FR-Plan-de-soins: whether the resident is in palliative care (SNOMED 103735009)."""
        items = [i for i in self.record.directives if _is_palliative(i)]
        section, text = self.section(
            body, ("2.16.840.1.113883.10.20.1.10", "1.3.6.1.4.1.19376.1.5.3.1.3.36", "1.2.250.1.213.1.1.2.158"),
            ("18776-5", "Plan de soins"), "Soins palliatifs", with_id=False)
        ref = self.ref("soins-palliatifs")
        table = _Table(text, ("Plan de soins", "Précision"))
        if items:
            table.row(("Soins palliatifs : oui", ref), "; ".join(i.detail or i.text for i in items))
        else:
            table.row(("Soins palliatifs : non renseigné", ref), "")
        proc = _el(_el(section, "entry"), "procedure", classCode="PROC", moodCode="EVN")
        for template in ("1.3.6.1.4.1.19376.1.5.3.1.4.19", "2.16.840.1.113883.10.20.1.29",
                         "1.2.250.1.213.1.1.3.62"):
            _el(proc, "templateId", root=template)
        _el(proc, "id", root=self.uid())
        if items:
            _el(proc, "code", code="103735009", displayName="Soins palliatifs", codeSystem=SNOMED,
                codeSystemName="SNOMED CT")
        else:
            _el(proc, "code", code="no-procedure-info", displayName="Pas d'information sur les actes et "
                "interventions", codeSystem=ABSENT_UNKNOWN)
        _text_ref(proc, ref)
        _el(proc, "statusCode", code="active" if items else "completed")
        if items:
            _ivl(proc, "effectiveTime", items[0].start, items[0].end)
        else:
            _el(proc, "effectiveTime", nullFlavor="UNK")

    def directives(self, body: Any) -> None:
        items = [i for i in self.record.directives if not _is_palliative(i)]
        section, text = self.section(
            body, ("2.16.840.1.113883.10.20.1.1", "1.3.6.1.4.1.19376.1.5.3.1.3.34",
                   "1.3.6.1.4.1.19376.1.5.3.1.3.35", "1.2.250.1.213.1.1.2.157"),
            ("42348-3", "Directives anticipées"), "Directives anticipées")
        table = _Table(text, ("Directive", "Date", "Précision"))
        ref = self.ref("directives")
        if items:
            table.row(("Directives anticipées : oui", ref), "", "")
            for item in items:
                table.row(item.text, _fr_date(item.start), item.detail or "")
        else:
            table.row(("Directives anticipées : non renseigné", ref), "", "")
        obs = _el(_el(section, "entry"), "observation", classCode="OBS", moodCode="EVN")
        for template in ("2.16.840.1.113883.10.20.1.17", "1.3.6.1.4.1.19376.1.5.3.1.4.13",
                         "1.3.6.1.4.1.19376.1.5.3.1.4.13.7", "1.2.250.1.213.1.1.3.54"):
            _el(obs, "templateId", root=template)
        _el(obs, "id", root=self.uid())
        _el(obs, "code", code="42348-3", displayName="Directives anticipées", codeSystem=LOINC,
            codeSystemName="LOINC")
        _text_ref(obs, ref)
        _el(obs, "statusCode", code="completed")
        first = items[0] if items else None
        _ivl(obs, "effectiveTime", first.start if first else None, first.end if first else None)
        _bl(obs, True if items else None)

    def state(self, body: Any) -> None:
        """FR-Resultats-evenements: the fifteen observations of the DLU form, each yes / no / not known."""
        known: dict[str, bool] = {}
        others: list[Item] = []
        for item in self.record.state:
            if item.code and item.code.code in STATE_CODES:
                known[item.code.code] = _item_value(item)
            else:
                others.append(item)
        section, text = self.section(
            body, ("1.3.6.1.4.1.19376.1.5.3.1.1.21.2.9", "1.3.6.1.4.1.19376.1.7.3.1.1.13.7",
                   "1.2.250.1.213.1.1.2.163"),
            ("42545-4", "Evènements observés"), "Etat du patient")
        entries: list[tuple[str, str, str, bool | None]] = []
        for group, concepts in STATE_GROUPS:
            table = _Table(text, (group, "Observation"))
            for code, display in concepts:
                ref = self.ref("etat")
                value = known.get(code)
                table.row((display, ref), _yes_no(value))
                entries.append((code, display, ref, value))
        if others:
            table = _Table(text, ("Autres observations", "Précision"))
            for item in others:
                table.row(item.text, item.detail or "")
        for code, display, ref, value in entries:
            self.simple_observation(section, Code(code, display, oid=SNOMED), ref, value)

    def results_dlu(self, body: Any) -> None:
        """FR-Resultats-examens: the carriage of a multi-resistant bacteria (BMR / BHRe) and other results."""
        section, text = self.section(
            body, ("1.3.6.1.4.1.19376.1.5.3.1.3.27", "1.3.6.1.4.1.19376.1.5.3.1.3.28", "1.2.250.1.213.1.1.2.151"),
            ("30954-2", "Résultats d'examens"), "Résultats d'examens")
        table = _Table(text, ("Examen", "Résultat", "Date"))
        bmr = [i for i in self.record.results if _is_bmr(i)]
        ref = self.ref("bmr")
        self.results_procedure(section, ref)
        if bmr:
            carried = any(_item_value(i) for i in bmr)
            details = "; ".join(filter(None, (i.detail if i.detail and not _negative(i) else i.text for i in bmr)))
            table.row(("Le patient porte-t-il une bactérie multirésistante ?", ref),
                      _yes_no(carried) + (f" ({details})" if details else ""), _fr_date(bmr[0].start))
        else:
            carried = None
            table.row(("Le patient porte-t-il une bactérie multirésistante ?", ref), _yes_no(None), "")
        self.simple_observation(section, Code("U83.71", "Bactérie multirésistante [BMR]", oid=ICD10), ref,
                                carried, time=fhir_ts(bmr[0].start) if bmr else None)
        for item in self.record.results:
            if _is_bmr(item):
                continue
            ref = self.ref("resultat")
            table.row((item.text, ref), item.detail or "", _fr_date(item.start))
            self.simple_observation(section, item.code, ref, _item_value(item), time=fhir_ts(item.start))

    def results_procedure(self, section: Any, ref: str) -> None:
        """The FR-Acte the coded results section opens with (no act documented: code nullFlavor NA)."""
        proc = _el(_el(section, "entry"), "procedure", classCode="PROC", moodCode="EVN")
        for template in ("1.3.6.1.4.1.19376.1.5.3.1.4.19", "2.16.840.1.113883.10.20.1.29",
                         "1.2.250.1.213.1.1.3.62"):
            _el(proc, "templateId", root=template)
        _el(proc, "id", root=self.uid())
        _el(proc, "code", nullFlavor="NA")
        _text_ref(proc, ref)
        _el(proc, "statusCode", code="completed")
        _el(proc, "effectiveTime", nullFlavor="NA")

    def vaccinations(self, body: Any) -> None:
        items = self.record.vaccinations
        section, text = self.section(
            body, ("2.16.840.1.113883.10.20.1.6", "1.3.6.1.4.1.19376.1.5.3.1.3.23", "1.2.250.1.213.1.1.2.147"),
            ("11369-6", "Historique des vaccinations"), "Vaccinations")
        table = _Table(text, ("Date", "Vaccin", "Précision"))
        rows: Sequence[Item | None] = items or (None,)
        for item in rows:
            ref = self.ref("vaccin")
            if item is None:
                table.row("", ("Pas d'information sur les vaccins", ref), "")
            else:
                table.row(_fr_date(item.start), (item.text, ref), item.detail or "")
            sbadm = _el(_el(section, "entry"), "substanceAdministration", classCode="SBADM", moodCode="EVN",
                        negationInd="false")
            for template in ("2.16.840.1.113883.10.20.1.24", "1.3.6.1.4.1.19376.1.5.3.1.4.12",
                             "1.2.250.1.213.1.1.3.45"):
                _el(sbadm, "templateId", root=template)
            _el(sbadm, "id", root=self.uid())
            _el(sbadm, "code", code="IMMUNIZ", displayName="Immunization", codeSystem="2.16.840.1.113883.5.4",
                codeSystemName="ActCode")
            _text_ref(sbadm, ref)
            _el(sbadm, "statusCode", code="completed")
            start = fhir_ts(item.start) if item else None
            if start:
                _el(sbadm, "effectiveTime", value=start)
            else:
                _el(sbadm, "effectiveTime", nullFlavor="UNK")
            _el(sbadm, "doseQuantity", nullFlavor="UNK")
            product = _el(_el(sbadm, "consumable", typeCode="CSM"), "manufacturedProduct", classCode="MANU")
            for template in ("2.16.840.1.113883.10.20.1.53", "1.3.6.1.4.1.19376.1.5.3.1.4.7.2",
                             "1.2.250.1.213.1.1.3.43"):
                _el(product, "templateId", root=template)
            material = _el(product, "manufacturedMaterial")
            if item is None:
                _product_code(material, None, ref, ("no-immunization-info", "Pas d'information sur les vaccins"))
                _el(material, "name", nullFlavor="NA")
            else:
                _product_code(material, item.code, ref)
                _el(material, "name", item.text)

    def comment(self, body: Any, comment: str | None) -> None:
        if not comment:
            return
        _, text = self.section(
            body, ("2.16.840.1.113883.10.12.201", "1.3.6.1.4.1.19376.1.4.1.2.16", "1.2.250.1.213.1.1.2.73"),
            ("55112-7", "Commentaire"), "Commentaires", with_id=False)
        for line in comment.splitlines():
            if line.strip():
                _el(text, "paragraph", line)

    def attached(self, body: Any) -> None:
        """FR-Documents-ajoutes: the DLU checklist, each document of JDV_ChecklistDLU on file or not.

        The documents themselves are not embedded (the record holds references, not the files): the checklist
        is the narrative, and no FR-Document-attache entry (which would carry the file) is written."""
        on_file: dict[str, Item] = {}
        others: list[Item] = []
        for item in self.record.attached:
            if item.code and item.code.code in dict(CHECKLIST_DLU):
                on_file[item.code.code] = item
            else:
                others.append(item)
        section, text = self.section(body, ("1.2.250.1.213.1.1.2.37",), ("55107-7", "Documents ajoutés"),
                                     "Checklist des documents annexés au DLU")
        table = _Table(text, ("Document", "Dans le dossier"))
        for code, display in CHECKLIST_DLU:
            found = on_file.get(code)
            ref = self.ref("document")
            table.row((display, ref), _on_file(found))
            self.attached_entry(section, Code(code, display, oid=TA_ASIP), ref, found is not None)
        for item in others:
            table.row(item.text, "oui" + (f" ({_fr_date(item.start)})" if item.start else ""))

    def attached_entry(self, section: Any, code: Code, ref: str, on_file: bool) -> None:
        """A FR-Document-attache of the checklist: the type of document, negated when it is not on file. The
        file itself is not embedded (``observationMedia/value`` nullFlavor: NAV on file, NA when not)."""
        organizer = _el(_el(section, "entry"), "organizer", classCode="CLUSTER", moodCode="EVN")
        _el(organizer, "templateId", root="1.2.250.1.213.1.1.3.18")
        _el(organizer, "id", root=self.uid())
        _el(organizer, "code", code="55107-7", displayName="Document attaché", codeSystem=LOINC,
            codeSystemName="LOINC")
        _el(organizer, "statusCode", code="completed")
        obs = _el(_el(organizer, "component"), "observation", classCode="OBS", moodCode="EVN",
                  negationInd=None if on_file else "true")
        for template in ("1.3.6.1.4.1.19376.1.5.3.1.4.13", "1.2.250.1.213.1.1.3.48", "1.2.250.1.213.1.1.3.48.18"):
            _el(obs, "templateId", root=template)
        _el(obs, "id", root=self.uid())
        _el(obs, "code", code="69764-9", displayName="Type de document", codeSystem=LOINC, codeSystemName="LOINC")
        _text_ref(obs, ref)
        _el(obs, "statusCode", code="completed")
        _el(obs, "effectiveTime", nullFlavor="NA")
        _el(obs, "value", xsi_type="CD", code=code.code, displayName=code.display, codeSystem=TA_ASIP,
            codeSystemName="TA_ASIP")
        media = _el(_el(organizer, "component"), "observationMedia", classCode="OBS", moodCode="EVN",
                    ID=self.ref("media"))
        _el(media, "value", nullFlavor="NAV" if on_file else "NA")

    # FLUDT sections

    def transfer_events(self, body: Any, transfer: Transfer) -> None:
        section, text = self.section(
            body, ("1.3.6.1.4.1.19376.1.5.3.1.1.21.2.9", "1.3.6.1.4.1.19376.1.7.3.1.1.13.7",
                   "1.2.250.1.213.1.1.2.163"),
            ("42545-4", "Evènements observés"), "Transfert du patient de l'EHPAD vers le SU")
        table = _Table(text, ("Transfert", "Précision"))
        reason_ref, place_ref = self.ref("transfert-motif"), self.ref("transfert-destination")
        table.row(("Motif", reason_ref), transfer.reason)
        table.row("Date", self.ids.effective.strftime("%d/%m/%Y %H:%M"))
        table.row(("Etablissement de destination", place_ref), transfer.destination or "Non renseigné")
        obs = self.simple_observation(section, Code("57277-6", "Motif du transfert vers le service des urgences",
                                                    oid=LOINC), reason_ref, None, time=self.effective)
        value = obs.find(f"{{{NS}}}value")
        obs.remove(value)
        value = _el(obs, "value", xsi_type="ST")
        value.text = _clean(transfer.reason)
        # written as the resident leaves: the transfer is the one planned now (INT, normal), not one done
        act = _el(_el(section, "entry"), "act", classCode="ACT", moodCode="INT")
        _el(act, "templateId", root="1.3.6.1.4.1.19376.1.5.3.1.1.25.1.4.1")
        _el(act, "templateId", root="1.2.250.1.213.1.1.3.28")
        _el(act, "id", root=self.uid())
        _el(act, "code", code="80413-8", displayName="Transfert du patient", codeSystem=LOINC,
            codeSystemName="LOINC")
        _text_ref(act, place_ref)
        _el(act, "statusCode", code="normal")
        time = _el(act, "effectiveTime")
        _el(time, "low", value=self.effective)
        participant = _el(act, "participant", typeCode="DST")
        role = _el(participant, "participantRole", classCode="SDLOC")
        _el(role, "id", nullFlavor="NAV")
        _el(role, "code", nullFlavor="UNK")  # the kind of establishment (TRE_R02) is not given
        _el(role, "addr", nullFlavor="NAV")
        _el(role, "telecom", nullFlavor="NAV")
        entity = _el(role, "playingEntity", classCode="ENT")
        if transfer.destination:
            _el(entity, "name", transfer.destination)
        else:
            _el(entity, "name", nullFlavor="NAV")

    def vital_signs(self, body: Any) -> None:
        section, text = self.section(
            body, ("2.16.840.1.113883.10.20.1.16", "1.3.6.1.4.1.19376.1.5.3.1.3.25",
                   "1.3.6.1.4.1.19376.1.5.3.1.1.5.3.2", "1.2.250.1.213.1.1.2.75"),
            ("8716-3", "Signes vitaux"), "Constantes du patient", with_id=False)
        table = _Table(text, ("Constante", "Mesure", "Date"))
        vitals = [v for v in self.record.vitals if v.code and v.code.code in _VITALS and _quantity(v)]
        others = [v for v in self.record.vitals if v not in vitals]
        organizer = _el(_el(section, "entry"), "organizer", classCode="CLUSTER", moodCode="EVN")
        for template in ("2.16.840.1.113883.10.20.1.32", "2.16.840.1.113883.10.20.1.35",
                         "1.3.6.1.4.1.19376.1.5.3.1.4.13.1", "1.2.250.1.213.1.1.3.49"):
            _el(organizer, "templateId", root=template)
        _el(organizer, "id", root=self.uid())
        _el(organizer, "code", code="85353-1", displayName="Signes vitaux", codeSystem=LOINC,
            codeSystemName="LOINC")
        _el(organizer, "statusCode", code="completed")
        times = sorted(t for t in (fhir_ts(v.start) for v in vitals) if t)
        _el(organizer, "effectiveTime", value=times[-1] if times else self.effective)
        measured: list[tuple[Item, str]] = []
        for vital in vitals:
            ref = self.ref("constante")
            table.row((vital.text, ref), vital.detail or "", _fr_date(vital.start))
            measured.append((vital, ref))
        for vital in others:
            table.row(vital.text, vital.detail or "", _fr_date(vital.start))
        if not measured:
            ref = self.ref("constante")
            table.row(("Aucune constante récente dans le dossier", ref), "", "")
        for vital, ref in measured:
            assert vital.code is not None
            label, unit = _VITALS[vital.code.code]
            value = (_quantity(vital) or ("", ""))[0]
            obs = _el(_el(organizer, "component", typeCode="COMP"), "observation", classCode="OBS",
                      moodCode="EVN")
            for template in ("2.16.840.1.113883.10.20.1.31", "1.3.6.1.4.1.19376.1.5.3.1.4.13",
                             "1.3.6.1.4.1.19376.1.5.3.1.4.13.2", "1.2.250.1.213.1.1.3.50"):
                _el(obs, "templateId", root=template)
            _el(obs, "id", root=self.uid())
            _el(obs, "code", code=vital.code.code, displayName=label, codeSystem=LOINC, codeSystemName="LOINC")
            _text_ref(obs, ref)
            _el(obs, "statusCode", code="completed")
            _el(obs, "effectiveTime", value=fhir_ts(vital.start) or self.effective)
            _el(obs, "value", xsi_type="PQ", value=value, unit=unit)
        if not measured:
            ref = text.find(f".//{{{NS}}}content").get("ID")
            obs = _el(_el(organizer, "component", typeCode="COMP"), "observation", classCode="OBS",
                      moodCode="EVN")
            for template in ("2.16.840.1.113883.10.20.1.31", "1.3.6.1.4.1.19376.1.5.3.1.4.13",
                             "1.3.6.1.4.1.19376.1.5.3.1.4.13.2", "1.2.250.1.213.1.1.3.50"):
                _el(obs, "templateId", root=template)
            _el(obs, "id", root=self.uid())
            _el(obs, "code", code="8867-4", displayName="Fréquence cardiaque", codeSystem=LOINC,
                codeSystemName="LOINC")
            _text_ref(obs, ref)
            _el(obs, "statusCode", code="completed")
            _el(obs, "effectiveTime", nullFlavor="NI")
            _el(obs, "value", xsi_type="PQ", nullFlavor="NI")

    def results_fludt(self, body: Any, transfer: Transfer) -> None:
        section, text = self.section(
            body, ("1.3.6.1.4.1.19376.1.5.3.1.3.27", "1.3.6.1.4.1.19376.1.5.3.1.3.28", "1.2.250.1.213.1.1.2.151"),
            ("30954-2", "Résultats d'examens"), "Observations")
        table = _Table(text, ("Observation", "Résultat"))
        ref = self.ref("conscience")
        self.results_procedure(section, ref)
        state = transfer.consciousness
        if state in CONSCIOUSNESS:
            assert state is not None
            table.row(("Etat de conscience", ref), CONSCIOUSNESS[state])
            self.simple_observation(section, Code(state, CONSCIOUSNESS[state], oid=TA_ASIP), ref, True,
                                    time=self.effective)
        else:
            table.row(("Etat de conscience", ref), "non renseigné")
            self.simple_observation(section, Code("DLU_002", CONSCIOUSNESS["DLU_002"], oid=TA_ASIP), ref, None,
                                    time=self.effective)
        for item in self.record.results:
            ref = self.ref("resultat")
            table.row((item.text, ref), item.detail or "")
            self.simple_observation(section, item.code, ref, _item_value(item), time=fhir_ts(item.start))

    def last_meal(self, body: Any, transfer: Transfer) -> None:
        section, text = self.section(
            body, ("1.3.6.1.4.1.19376.1.7.3.1.1.13.5", "1.2.250.1.213.1.1.2.162"),
            ("47420-5", "Évaluation du statut fonctionnel"), "Date et heure du dernier repas", with_id=False)
        ref = self.ref("repas")
        _el(_el(text, "paragraph"), "content", transfer.last_meal or "Dernier repas : non renseigné", ID=ref)
        obs = self.simple_observation(section, Code("GEN-244", "Date et heure du dernier repas", oid=TA_ASIP), ref,
                                      None)
        value = obs.find(f"{{{NS}}}value")
        obs.remove(value)
        if transfer.last_meal:
            value = _el(obs, "value", xsi_type="ST")
            value.text = _clean(transfer.last_meal)
        else:
            _el(obs, "value", xsi_type="ST", nullFlavor="NI")

    def devices(self, body: Any, transfer: Transfer) -> None:
        section, text = self.section(body, ("1.2.250.1.213.1.1.2.53",), ("46264-8", "Dispositifs médicaux"),
                                     "Prothèses et objets personnels")
        table = _Table(text, ("Prothèse / objet personnel", "Accompagne le patient"))
        things = [*transfer.devices, *transfer.belongings]
        if not things:
            ref = self.ref("objet")
            table.row(("Aucune prothèse ni aucun objet personnel renseigné", ref), "")
            obs = self.simple_observation(section, _OTHER_DEVICE, ref, None, ("1.2.250.1.213.1.1.3.12",),
                                          time=self.effective)
            _el(obs, "targetSiteCode", nullFlavor="NA")
            return
        for thing in things:
            ref = self.ref("objet")
            table.row((thing, ref), "oui")
            code = _device_code(thing)
            obs = self.simple_observation(section, code, ref, None, ("1.2.250.1.213.1.1.3.12",),
                                          time=self.effective)
            value = obs.find(f"{{{NS}}}value")
            obs.remove(value)
            if code is _OTHER_DEVICE:
                value = _el(obs, "value", xsi_type="CD")
                _el(_el(value, "originalText"), "reference", value="#" + ref)
            else:
                _el(obs, "value", xsi_type="BL", value="true")
            _el(obs, "targetSiteCode", nullFlavor="NASK")


def _on_file(item: Item | None) -> str:
    if item is None:
        return "non"
    return "oui" + (f" ({_fr_date(item.start)})" if item.start else "")


def _is_palliative(item: Item) -> bool:
    return bool(item.code and item.code.code == "103735009") or "palliati" in item.text.lower()


def _is_bmr(item: Item) -> bool:
    text = item.text.lower()
    return bool(item.code and item.code.code.startswith("U83")) or any(
        word in text for word in ("bmr", "bhre", "multirésistante", "multi-résistante", "multiresistante"))


def _negative(item: Item) -> bool:
    return not _item_value(item)


def _device_code(thing: str) -> Code:
    lowered = thing.lower()
    for word, code in _DEVICE_WORDS:
        if word in lowered:
            return code
    return _OTHER_DEVICE


_NUMBER = re.compile(r"^\s*(-?\d+(?:[.,]\d+)?)\s*(.*?)\s*$")


def _quantity(item: Item) -> tuple[str, str] | None:
    """The value and the unit of a vital sign written "80 /min", "37,5 Cel" (None when not a number)."""
    match = _NUMBER.match(item.detail or "")
    if not match:
        return None
    return match.group(1).replace(",", "."), match.group(2)
