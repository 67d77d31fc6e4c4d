"""Small, hand-made inputs for the mssante tests: a CDA, a PDF, an ebRIM SubmitObjectsRequest, raw zip edits.

The metadata builder here is deliberately independent of the service's own (``dui.dmp.ebrim``), which one test
also uses: two writers, one reader.
"""

from __future__ import annotations

import struct
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from mssante.xdm import (
    DE_AUTHOR,
    DE_CLASS,
    DE_CONFIDENTIALITY,
    DE_FORMAT,
    DE_PATIENT_ID,
    DE_TYPE,
    DE_UNIQUE_ID,
    NS_LCM,
    NS_RIM,
    SS_CONTENT_TYPE,
    SS_NODE,
    SS_PATIENT_ID,
    SS_SOURCE_ID,
    SS_UNIQUE_ID,
    Sender,
)

INS = "279035121518989"  # the example matricule of the ANS DLU example
INS_OID = "1.2.250.1.213.1.4.10"  # INS-NIR-TEST
PATIENT_CX = f"{INS}^^^&{INS_OID}&ISO"
INSTITUTION = "EHPAD Les Tilleuls^^^^^&1.2.250.1.71.4.2.2&ISO^IDNT^^^10000001"
SENDER = Sender(application="DUI EHPAD", version="0.1.0", vendor="Projet DUI", contact="support@dui.invalid")
R = f"{{{NS_RIM}}}"

CDA = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<ClinicalDocument xmlns="urn:hl7-org:v3">'
    '<id root="1.2.250.1.999.1.2" extension="DLU-1"/>'
    '<code code="74207-2" codeSystem="2.16.840.1.113883.6.1" displayName="DLU"/>'
    "<title>Dossier de liaison d'urgence</title>"
    '<recordTarget><patientRole><id root="1.2.250.1.213.1.4.10" extension="279035121518989"/>'
    "<patient><name><family>TESTMSS</family><given>Hélène</given></name></patient></patientRole></recordTarget>"
    "</ClinicalDocument>\n"
).encode()
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


@dataclass(frozen=True)
class Doc:
    entry_id: str
    unique_id: str
    mime_type: str
    title: str
    type_code: str = "74207-2"


def cda_doc() -> Doc:
    return Doc(f"urn:uuid:{uuid.uuid4()}", "1.2.250.1.999.1.2^DLU-1", "text/xml", "Dossier de liaison d'urgence")


def pdf_doc() -> Doc:
    return Doc(f"urn:uuid:{uuid.uuid4()}", "1.2.250.1.999.1.2^DLU-1-PDF", "application/pdf", "DLU (PDF)")


def _el(parent: etree._Element, tag: str, **attrs: str) -> etree._Element:
    return etree.SubElement(parent, R + tag, attrs)


def _slot(parent: etree._Element, name: str, *values: str) -> None:
    value_list = _el(_el(parent, "Slot", name=name), "ValueList")
    for value in values:
        _el(value_list, "Value").text = value


def _name(parent: etree._Element, text: str) -> None:
    _el(_el(parent, "Name"), "LocalizedString", value=text)


def _classify(parent: etree._Element, scheme: str, target: str, code: str, coding: str, display: str) -> None:
    node = _el(parent, "Classification", classificationScheme=scheme, classifiedObject=target,
               nodeRepresentation=code, id=f"urn:uuid:{uuid.uuid4()}")
    _slot(node, "codingScheme", coding)
    _name(node, display)


def submit_objects(docs: Sequence[Doc], patient: str = PATIENT_CX, *, classify_at_top: bool = False) -> bytes:
    """An lcm:SubmitObjectsRequest: one SubmissionSet, one ExtrinsicObject per doc, HasMember associations.
    ``classify_at_top``: the SubmissionSet's classification as a sibling (both placements are ebRIM)."""
    root = etree.Element(f"{{{NS_LCM}}}SubmitObjectsRequest", nsmap={"lcm": NS_LCM, "rim": NS_RIM})
    objects = _el(root, "RegistryObjectList")
    for doc in docs:
        obj = _el(objects, "ExtrinsicObject", id=doc.entry_id, mimeType=doc.mime_type,
                  objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1")
        _slot(obj, "creationTime", "20260105120000")
        _slot(obj, "languageCode", "fr-FR")
        _name(obj, doc.title)
        author = _el(obj, "Classification", classificationScheme=DE_AUTHOR, classifiedObject=doc.entry_id,
                     nodeRepresentation="", id=f"urn:uuid:{uuid.uuid4()}")
        _slot(author, "authorInstitution", INSTITUTION)
        _classify(obj, DE_CLASS, doc.entry_id, "11", "1.2.250.1.213.1.1.4.1", "Synthèse")
        _classify(obj, DE_CONFIDENTIALITY, doc.entry_id, "N", "2.16.840.1.113883.5.25", "Normal")
        _classify(obj, DE_CONFIDENTIALITY, doc.entry_id, "INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13",
                  "Non visible par le patient")
        _classify(obj, DE_FORMAT, doc.entry_id, "urn:asip:ci-sis:dlu:2015", "1.2.250.1.213.1.1.4.2.282", "DLU")
        _classify(obj, DE_TYPE, doc.entry_id, doc.type_code, "2.16.840.1.113883.6.1", "DLU")
        for scheme, value in ((DE_PATIENT_ID, patient), (DE_UNIQUE_ID, doc.unique_id)):
            _el(obj, "ExternalIdentifier", identificationScheme=scheme, registryObject=doc.entry_id, value=value,
                id=f"urn:uuid:{uuid.uuid4()}")
    ss = "urn:uuid:" + str(uuid.uuid4())
    package = _el(objects, "RegistryPackage", id=ss)
    _slot(package, "submissionTime", "20260105120500")
    _name(package, "Envoi MSSanté")
    author = _el(package, "Classification", classificationScheme="urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d",
                 classifiedObject=ss, nodeRepresentation="", id=f"urn:uuid:{uuid.uuid4()}")
    _slot(author, "authorInstitution", INSTITUTION)
    _classify(package, SS_CONTENT_TYPE, ss, "74207-2", "2.16.840.1.113883.6.1", "DLU")
    for scheme, value in ((SS_UNIQUE_ID, "1.2.250.1.999.1.3.1"), (SS_SOURCE_ID, "1.2.250.1.999.1"),
                          (SS_PATIENT_ID, patient)):
        _el(package, "ExternalIdentifier", identificationScheme=scheme, registryObject=ss, value=value,
            id=f"urn:uuid:{uuid.uuid4()}")
    if classify_at_top:
        _el(objects, "Classification", classifiedObject=ss, classificationNode=SS_NODE, id=f"urn:uuid:{uuid.uuid4()}")
    else:
        _el(package, "Classification", classifiedObject=ss, classificationNode=SS_NODE, id=f"urn:uuid:{uuid.uuid4()}")
    for doc in docs:
        assoc = _el(objects, "Association", associationType="urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember",
                    sourceObject=ss, targetObject=doc.entry_id, id=f"urn:uuid:{uuid.uuid4()}")
        _slot(assoc, "SubmissionSetStatus", "Original")
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


# ---- raw zip edits, for archives zipfile would not write -------------------------------------------------------

def rename(data: bytes, old: str, new: str) -> bytes:
    """Every occurrence of the entry name ``old`` (local header and central directory) becomes ``new``, same length."""
    assert len(old.encode()) == len(new.encode()), "names must keep their length"
    assert data.count(old.encode()) == 2, "the name must appear once as local name and once in the directory"
    return data.replace(old.encode(), new.encode())


def central_entries(data: bytes) -> list[int]:
    """Offsets of the central directory headers."""
    offsets, at = [], data.find(b"PK\x01\x02")
    while at != -1:
        offsets.append(at)
        at = data.find(b"PK\x01\x02", at + 4)
    return offsets


def set_declared_size(data: bytes, name: str, size: int) -> bytes:
    """The uncompressed size of ``name`` forged to ``size`` in both its local header and its directory entry."""
    out = bytearray(data)
    for at in central_entries(data):
        name_length = struct.unpack_from("<H", out, at + 28)[0]
        if out[at + 46:at + 46 + name_length] == name.encode():
            struct.pack_into("<I", out, at + 24, size)
            local = struct.unpack_from("<I", out, at + 42)[0]
            struct.pack_into("<I", out, local + 22, size)
            return bytes(out)
    raise AssertionError(f"{name} not found")


def set_flag_bits(data: bytes, name: str, bits: int) -> bytes:
    """General purpose flag ``bits`` added to ``name``'s local header and directory entry (zipfile clears them)."""
    out = bytearray(data)
    for at in central_entries(data):
        name_length = struct.unpack_from("<H", out, at + 28)[0]
        if out[at + 46:at + 46 + name_length] == name.encode():
            struct.pack_into("<H", out, at + 8, struct.unpack_from("<H", out, at + 8)[0] | bits)
            local = struct.unpack_from("<I", out, at + 42)[0]
            struct.pack_into("<H", out, local + 6, struct.unpack_from("<H", out, local + 6)[0] | bits)
            return bytes(out)
    raise AssertionError(f"{name} not found")


def point_entry_at(data: bytes, name: str, other: str) -> bytes:
    """The directory entry of ``name`` made to point at the local header of ``other`` (overlapping entries)."""
    out = bytearray(data)
    offsets: dict[bytes, int] = {}
    for at in central_entries(data):
        name_length = struct.unpack_from("<H", out, at + 28)[0]
        offsets[bytes(out[at + 46:at + 46 + name_length])] = at
    target = struct.unpack_from("<I", out, offsets[other.encode()] + 42)[0]
    struct.pack_into("<I", out, offsets[name.encode()] + 42, target)
    return bytes(out)


def zip_of(entries: Sequence[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    import io

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return out.getvalue()
