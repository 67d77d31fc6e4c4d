"""XDS DocumentEntry from the DUI's DocumentReference and CDA (DOMAIN §4.2; IHE ITI TF-3 §4.2.3.2)."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from dui.dmp.metadata import (
    CLASS_OID,
    MASKING_OID,
    Code,
    MetadataError,
    entry_from,
    submission_set,
    xds_time,
)
from dui.fhir.xmlsafe import UnsafeXml
from tests.unit.dmp_samples import INS, INS_OID, SOURCE_ID, dlu_bytes, dlu_entry, docref_for


def test_every_slot_of_the_dlu_entry() -> None:
    entry, data = dlu_entry()
    assert entry.entry_uuid == "urn:uuid:0b7d3c52-3f0e-4b8c-9d5e-6f7a8b9c0d1e"
    assert entry.unique_id == "1.2.250.1.999.1.2^DLU-p1-3"
    assert entry.patient_id == f"{INS}^^^&{INS_OID}&ISO^NH"
    assert entry.source_patient_id == "R-000042^^^&1.2.250.1.999.1.1.42&ISO^PI"
    assert entry.class_code == Code("11", CLASS_OID, "Synthèse")
    assert entry.type_code == Code("74207-2", "2.16.840.1.113883.6.1", "Dossier de liaison d'urgence")
    assert entry.format_code.code == "urn:asip:ci-sis:dlu:2015"
    assert (entry.healthcare_facility_type_code.code, entry.healthcare_facility_type_code.scheme) == (
        "SA17", "1.2.250.1.71.4.2.4")
    assert (entry.practice_setting_code.code, entry.practice_setting_code.scheme) == (
        "ETABLISSEMENT", "1.2.250.1.213.1.1.4.9")
    assert [(c.code, c.scheme) for c in entry.confidentiality_codes] == [("N", "2.16.840.1.113883.5.25")]
    assert entry.author.institution == "EHPAD Les Tilleuls^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1690000001"
    assert entry.author.person == "810007654321^PETIT^Claire^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
    assert entry.author.specialty == "G15_10^Médecin^1.2.250.1.213.1.1.4.5"
    assert entry.legal_authenticator == entry.author.person
    assert entry.hash == hashlib.sha1(data).hexdigest() and len(entry.hash) == 40
    assert entry.size == len(data)
    assert entry.creation_time == "20260312093000"  # 10:30 Paris (+01:00) in UTC
    assert entry.service_start_time == "20260312093000"
    assert entry.service_stop_time is None
    assert (entry.language_code, entry.mime_type) == ("fr-FR", "text/xml")
    assert entry.title == "Document de liaison d'urgence"


def test_masking_codes_come_from_the_security_labels() -> None:
    entry, _ = dlu_entry(masking=("MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX", "OTHER"))
    assert entry.masking == {"MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"}
    assert all(c.scheme == MASKING_OID for c in entry.confidentiality_codes[1:])


def test_class_code_falls_back_on_the_type_code() -> None:
    data = dlu_bytes()
    docref = docref_for(data)
    del docref["category"]
    assert entry_from(docref, data, INS, INS_OID, SOURCE_ID).class_code == Code("11", CLASS_OID, "Synthèse")


def test_a_docref_for_another_document_is_refused() -> None:
    data = dlu_bytes()
    with pytest.raises(MetadataError, match="masterIdentifier"):
        entry_from(docref_for(data, extension="OTHER"), data, INS, INS_OID, SOURCE_ID)


def test_no_format_is_refused() -> None:
    data = dlu_bytes()
    docref = docref_for(data)
    del docref["content"][0]["format"]
    with pytest.raises(MetadataError, match="format"):
        entry_from(docref, data, INS, INS_OID, SOURCE_ID)


def test_unsafe_cda_is_refused() -> None:
    evil = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'
    with pytest.raises(UnsafeXml):
        entry_from(docref_for(evil), evil, INS, INS_OID, SOURCE_ID)


@pytest.mark.parametrize(("value", "expected"), [
    ("20260312103000+0100", "20260312093000"), ("20260101003000+0200", "20251231223000"),
    ("20230901", "20230901"), ("202309", "202309"), ("202603121030-0500", "20260312153000")])
def test_times_are_utc(value: str, expected: str) -> None:
    assert xds_time(value) == expected


def test_a_local_time_without_offset_is_refused() -> None:
    with pytest.raises(MetadataError):
        xds_time("20260312103000")
    with pytest.raises(MetadataError):
        xds_time(dt.datetime(2026, 3, 12, 10, 30))


def test_submission_set() -> None:
    entry, _ = dlu_entry()
    now = dt.datetime(2026, 3, 12, 11, 0, tzinfo=dt.UTC)
    submission = submission_set(entry, SOURCE_ID, f"{SOURCE_ID}.7", now)
    assert submission.submission_time == "20260312110000"
    assert submission.source_id == SOURCE_ID and submission.unique_id == f"{SOURCE_ID}.7"
    assert submission.author.institution == entry.author.institution
    assert submission.content_type_code == entry.type_code
    assert submission.patient_id == entry.patient_id
