"""A DLU built by the project, its DocumentReference as ``operations.document_reference`` shapes it, its entry."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from dui.dmp.metadata import Code, DocumentEntry, entry_from
from dui.dmp.vihf import VihfContext
from dui.documents import cda
from dui.documents.operations import CLASS_SYSTEM, CONFIDENTIALITY, FORMAT_SYSTEM
from tests.cda_factory import make_ids, make_record

INS = "236056912312345"
INS_OID = "1.2.250.1.213.1.4.10"
SOURCE_ID = "1.2.250.1.999.1"


def dlu_bytes(**ids: Any) -> bytes:
    return cda.dlu(make_record(), make_ids(**ids))


def docref_for(data: bytes, extension: str = "DLU-p1-3", masking: tuple[str, ...] = ()) -> dict[str, Any]:
    labels = [{"coding": [{"system": CONFIDENTIALITY, "code": "N", "display": "normal"}]}]
    labels += [{"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": m}]} for m in masking]
    return {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:oid:1.2.250.1.999.1.2", "value": extension},
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0b7d3c52-3f0e-4b8c-9d5e-6f7a8b9c0d1e"}],
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "74207-2"}]},
        "category": [{"coding": [{"system": CLASS_SYSTEM, "code": "11", "display": "Synthèse"}]}],
        "securityLabel": labels,
        "content": [{"attachment": {"contentType": "text/xml", "size": len(data),
                                    "hash": base64.b64encode(hashlib.sha1(data).digest()).decode()},
                     "format": {"system": FORMAT_SYSTEM, "code": "urn:asip:ci-sis:dlu:2015"}}],
    }


def dlu_entry(masking: tuple[str, ...] = (), **ids: Any) -> tuple[DocumentEntry, bytes]:
    data = dlu_bytes(**ids)
    extension = ids.get("extension", "DLU-p1-3")
    return entry_from(docref_for(data, extension, masking), data, INS, INS_OID, SOURCE_ID), data


def vihf_context() -> VihfContext:
    """The VIHF context of a development structure (its INS is set per request by the gateway)."""
    return VihfContext(subject_nameid="DEV-STRUCTURE", subject_name="DUI", structure_id="DEV-STRUCTURE",
                       sector="SA17^1.2.250.1.71.4.2.4", roles=(Code("10", "1.2.250.1.213.1.1.4.5", "Médecin"),),
                       ins="", ins_oid="", lps_name="DUI", lps_version="test", lps_homologation="NON-HOMOLOGUE")
