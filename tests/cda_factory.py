"""Plausible, fictitious records for the CDA builder tests: ``make_record(**overrides)``, ``make_transfer()``,
``make_ids()``. Every name, number and place here is invented (the INS is a test NIR under the test OID)."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta, timezone
from typing import Any

from dui.documents.cda import DocumentIds
from dui.documents.record import Code, Establishment, Identity, Item, Person, ResidentRecord, Transfer

PARIS = timezone(timedelta(hours=1))
AS_OF = datetime(2026, 3, 12, 10, 30, tzinfo=PARIS)
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"


def make_identity(**overrides: Any) -> Identity:
    identity = Identity(
        birth_family="MARTIN", first_given="Hélène", birth_given="Hélène Marie", used_family="DURAND",
        used_given="Hélène", birth_date=date(1936, 5, 14), sex="female", birth_place_code="69123",
        birth_place="Lyon", status_code="QUAL", status_label="Identité qualifiée", ins="236056912312345",
        ins_oid="1.2.250.1.213.1.4.10", local_id="R-000042", local_oid="1.2.250.1.999.1.1.42",
        address=("EHPAD Les Tilleuls", "12 rue des Lilas", "69003 Lyon"), phone="04 72 00 00 01")
    return dataclasses.replace(identity, **overrides)


def unqualified_identity(**overrides: Any) -> Identity:
    """An identity the sharing gate did not qualify: no INS, the local identifier only."""
    return make_identity(status_code="VALI", status_label="Identité validée", ins=None, ins_oid=None, **overrides)


def make_establishment() -> Establishment:
    return Establishment(name="EHPAD Les Tilleuls", finess="690000001", line="12 rue des Lilas", postal="69003",
                         city="Lyon", phone="04 72 00 00 00", source="Organization/ehpad")


def make_record(**overrides: Any) -> ResidentRecord:
    """A rich record: every section has something to say."""
    record = ResidentRecord(
        patient_id="p1",
        identity=make_identity(),
        establishment=make_establishment(),
        as_of=AS_OF,
        record_version="v7",
        stay_start="2023-09-01",
        gp=Person(family="BERNARD", given="Luc", role="Médecin traitant", phone="04 78 11 22 33",
                  rpps="10001234567", source="Practitioner/gp"),
        coordinator=Person(family="PETIT", given="Claire", role="Médecin coordonnateur", phone="04 72 00 00 09",
                           rpps="10007654321", source="Practitioner/coord"),
        trusted=(Person(family="DURAND", given="Sophie", role="Personne de confiance (fille)",
                        phone="06 12 34 56 78", source="RelatedPerson/r1"),),
        notify=(Person(family="DURAND", given="Marc", role="Personne à prévenir (fils)", phone="06 98 76 54 32",
                       source="RelatedPerson/r2"),),
        preferred_hospital="Hôpital Édouard Herriot, Lyon",
        dispositions=(Item(text="Pas d'hospitalisation sans accord de la personne de confiance"),),
        pathologies=(
            Item(text="Insuffisance cardiaque", code=Code("I50.9", "Insuffisance cardiaque, sans précision", ICD10),
                 start="2019-02-11", source="Condition/c1"),
            Item(text="Maladie d'Alzheimer", code=Code("G30.9", "Maladie d'Alzheimer, sans précision", ICD10),
                 start="2021-06", source="Condition/c2"),
            Item(text="Arthrose des genoux (non codée)", start="2015", source="Condition/c3"),
        ),
        antecedents=(
            Item(text="Fracture du col du fémur droit", code=Code("S72.0", "Fracture du col du fémur", ICD10),
                 start="2018-11-03", end="2019-01-15", source="Condition/c4"),
        ),
        allergies=(
            Item(text="Pénicilline", code=Code("J01CE", "Pénicillines sensibles aux bêta-lactamases", ATC),
                 detail="urticaire, criticité élevée", source="AllergyIntolerance/a1"),
            Item(text="Arachide", detail="œdème de Quincke", source="AllergyIntolerance/a2"),
        ),
        treatments=(
            Item(text="FUROSEMIDE 40 mg cp", code=Code("C03CA01", "furosémide", ATC), start="2024-01-10",
                 detail="1 cp le matin", source="MedicationStatement/m1"),
            Item(text="DONEPEZIL 10 mg cp", code=Code("N06DA02", "donépézil", ATC), start="2021-07-01",
                 detail="1 cp le soir", source="MedicationStatement/m2"),
            Item(text="Paracétamol si douleur", detail="1 g, 3 fois par jour au plus",
                 source="MedicationStatement/m3"),
        ),
        directives=(
            Item(text="Directives anticipées rédigées", start="2023-10-02", detail="Pas d'acharnement thérapeutique",
                 source="Consent/d1"),
        ),
        state=(
            Item(text="Désorientée", code=Code("62476001", "désorienté(e)", SNOMED), source="Observation/s1"),
            Item(text="Perte auditive", code=Code("15188001", "perte auditive", SNOMED), source="Observation/s2"),
            Item(text="Chutes répétées", code=Code("161898004", "chutes", SNOMED), source="Observation/s3"),
            Item(text="Pas de fugue", code=Code("248046000", "fugue", SNOMED), detail="non", source="Observation/s4"),
            Item(text="Se déplace avec un déambulateur", source="Observation/s5"),
        ),
        results=(
            Item(text="Portage BHRe", code=Code("U83.71", "Bactérie multirésistante [BMR]", ICD10),
                 detail="E. coli BLSE", start="2025-11-20", source="Observation/b1"),
        ),
        vaccinations=(
            Item(text="Vaccin grippal", code=Code("J07BB02", "grippe, antigène purifié", ATC), start="2025-10-15",
                 source="Immunization/v1"),
            Item(text="Vaccin COVID-19", start="2025-10-15", source="Immunization/v2"),
        ),
        vitals=(
            Item(text="Fréquence cardiaque", code=Code("8867-4", "Heart rate", LOINC), detail="78 /min",
                 start="2026-03-12T08:00:00+01:00", source="Observation/v1"),
            Item(text="Température", code=Code("8310-5", "Body temperature", LOINC), detail="37,8 Cel",
                 start="2026-03-12T08:00:00+01:00", source="Observation/v2"),
            Item(text="Poids", code=Code("29463-7", "Body weight", LOINC), detail="61 kg", start="2026-03-01",
                 source="Observation/v3"),
            Item(text="Pression artérielle systolique", code=Code("8480-6", "Systolic", LOINC), detail="135 mm[Hg]",
                 start="2026-03-12T08:00:00+01:00", source="Observation/v4"),
        ),
        attached=(
            Item(text="Attestation de la carte vitale", code=Code("DLU_006", "Attestation de la carte vitale",
                                                                  oid="1.2.250.1.213.1.1.4.322"),
                 start="2025-01-05", source="DocumentReference/d1"),
            Item(text="Grille AGGIR", code=Code("DLU_009", "Grille AGGIR (la plus récente)",
                                                oid="1.2.250.1.213.1.1.4.322"), source="DocumentReference/d2"),
        ),
        comment="Résidente très anxieuse lors des transferts.\nPréfère être appelée Mme Durand.",
    )
    return dataclasses.replace(record, **overrides)


def empty_record(**overrides: Any) -> ResidentRecord:
    """Nothing but the identity and the establishment."""
    return ResidentRecord(patient_id="p2", identity=make_identity(), establishment=make_establishment(),
                          as_of=AS_OF, record_version="v1", **overrides)


def make_transfer(**overrides: Any) -> Transfer:
    transfer = Transfer(
        reason="Dyspnée brutale, SpO2 86 % en air ambiant",
        destination="Service des urgences, Hôpital Édouard Herriot",
        last_meal="Petit déjeuner complet à 8 h",
        devices=("Lunettes", "Prothèse dentaire (haut)", "Appareil auditif droit"),
        belongings=("Alliance en or",),
        comment="Fille prévenue à 10 h 15.",
        consciousness="DLU_002",
    )
    return dataclasses.replace(transfer, **overrides)


def make_ids(kind: str = "DLU", **overrides: Any) -> DocumentIds:
    ids = DocumentIds(root="1.2.250.1.999.1.2", extension=f"{kind}-p1-3", set_extension=f"{kind}-p1", version=3,
                      effective=AS_OF, author_system="DUI", author_system_version="0.1.0")
    return dataclasses.replace(ids, **overrides)
