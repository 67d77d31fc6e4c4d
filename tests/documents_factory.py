"""A plausible ``ResidentRecord`` for the document tests, with fictitious data.

``make_record(**overrides)`` replaces any field of the record; ``make_identity(**overrides)`` and
``make_transfer(**overrides)`` do the same for the identity and the FLUDT transfer facts. The INS uses the TEST OID
(``urn:oid:1.2.250.1.213.1.4.10``) and a NIR with a valid key; no person here exists.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

from dui.documents.record import Code, Establishment, Identity, Item, Person, ResidentRecord, Transfer

INS_TEST_OID = "1.2.250.1.213.1.4.10"
AS_OF = datetime(2026, 3, 14, 7, 45, tzinfo=UTC)
BUILT_AT = datetime(2026, 3, 14, 8, 2, tzinfo=UTC)


def make_identity(**overrides: Any) -> Identity:
    identity = Identity(
        birth_family="Lefèvre",
        first_given="Hélène",
        birth_given="Hélène Marie Thérèse",
        used_family="Œuvray",
        used_given=None,
        birth_date=date(1938, 5, 21),
        sex="female",
        birth_place_code="69123",
        birth_place="Lyon",
        status_code="QUAL",
        status_label="Identité qualifiée",
        ins="238056912301816",
        ins_oid=INS_TEST_OID,
        local_id="IPP-000142",
        local_oid="1.2.250.1.999.1.690001424.1",
        address=("12 allée des Tilleuls", "69008 Lyon"),
        phone=None,
    )
    return replace(identity, **overrides)


def unqualified_identity(**overrides: Any) -> Identity:
    """The same resident before INSi and the ID document check: no matricule may be printed."""
    return make_identity(status_code="PROV", status_label="Identité provisoire", ins=None, ins_oid=None, **overrides)


def make_transfer(**overrides: Any) -> Transfer:
    transfer = Transfer(
        reason="Chute dans la chambre à 6 h, douleur de la hanche droite, ne peut se relever",
        destination="Service des urgences, Hôpital Nord-Ouest, Villefranche-sur-Saône",
        last_meal="Petit déjeuner complet à 7 h 30",
        devices=("Appareil auditif gauche", "Prothèse dentaire complète", "Lunettes de vue"),
        belongings=("Sac avec vêtements de rechange", "Téléphone portable"),
        comment="Résidente calme, orientée ; a reçu 1 g de paracétamol à 6 h 15.",
    )
    return replace(transfer, **overrides)


def _item(text: str, detail: str | None = None, start: str | None = None, **kw: Any) -> Item:
    return Item(text=text, detail=detail, start=start, **kw)


def make_record(**overrides: Any) -> ResidentRecord:
    record = ResidentRecord(
        patient_id="demo-resident-0001",
        identity=make_identity(),
        establishment=Establishment(
            name="EHPAD Les Tilleuls (démo)",
            finess="690001424",
            line="12 allée des Tilleuls",
            postal="69008",
            city="Lyon",
            phone="04 78 00 00 00",
            source="Organization/demo-ehpad-les-tilleuls",
        ),
        as_of=AS_OF,
        record_version="v-2026-03-14-0745",
        stay_start="2023-09-04",
        gp=Person("Morel", "Étienne", "Médecin traitant", phone="04 78 12 34 56", rpps="10001234567"),
        coordinator=Person("Guérin", "Anne", "Médecin coordonnateur", phone="04 78 00 00 01", rpps="10009876543"),
        trusted=(Person("Lefèvre", "Jacques", "Fils", phone="06 12 34 56 78"),),
        notify=(Person("Da Silva", "Marie-Noëlle", "Fille", phone="06 98 76 54 32"),),
        preferred_hospital="Hôpital Nord-Ouest, Villefranche-sur-Saône",
        dispositions=(_item("Hospitalisation acceptée si nécessaire", "après appel de la personne de confiance"),),
        pathologies=(
            _item("Insuffisance cardiaque", "FEVG 40 %", "2019-06", code=Code("I50.9", "Insuffisance cardiaque")),
            _item("Fibrillation atriale", "sous anticoagulant", "2020-01-15"),
            _item("Maladie d'Alzheimer", "stade modéré, MMS 16/30", "2022"),
            _item("Diabète de type 2", "non insulino-requérant", "2011"),
        ),
        antecedents=(
            _item("Fracture du col du fémur gauche", "prothèse intermédiaire", "2018-11-02"),
            _item("Cholécystectomie", None, "1985"),
        ),
        allergies=(
            _item("Pénicillines", "urticaire géante, œdème de Quincke – criticité élevée", "1992"),
            _item("Iode (produits de contraste)", "éruption cutanée"),
        ),
        treatments=(
            _item("Apixaban 2,5 mg", "1 comprimé matin et soir", "2020-01-15"),
            _item("Bisoprolol 2,5 mg", "1 comprimé le matin", "2019-06-20"),
            _item("Furosémide 40 mg", "1 comprimé le matin ; 2 si prise de poids > 1 kg", "2019-06-20"),
            _item("Metformine 500 mg", "1 comprimé matin et soir, au repas", "2011-03"),
            _item("Donépézil 10 mg", "1 comprimé le soir", "2022-02-01"),
            _item("Paracétamol 1 g", "si douleur, 4 fois par jour au plus, 6 h d'intervalle"),
        ),
        directives=(
            _item(
                "Directives anticipées rédigées",
                "pas de réanimation cardio-pulmonaire ; « pas d'acharnement »",
                "2024-02-10",
            ),
        ),
        state=(
            _item("Troubles cognitifs", "désorientation temporelle, risque de fugue"),
            _item("Mobilité", "marche avec déambulateur, aide pour les transferts"),
            _item("Risque de chute", "élevé (2 chutes en 6 mois)"),
            _item("Déglutition", "textures hachées, eau gélifiée"),
        ),
        results=(_item("Portage de BMR", "Entérobactérie BLSE – précautions contact", "2025-11-08"),),
        vaccinations=(
            _item("Grippe saisonnière", None, "2025-10-20"),
            _item("COVID-19", "rappel", "2025-10-20"),
            _item("Pneumocoque (VPC20)", None, "2024-03-12"),
        ),
        vitals=(
            _item("Pression artérielle", "138/76 mmHg", "2026-03-14T06:20:00+01:00"),
            _item("Fréquence cardiaque", "92 /min", "2026-03-14T06:20:00+01:00"),
            _item("Température", "37,1 °C", "2026-03-14T06:20:00+01:00"),
            _item("Saturation en oxygène", "95 %", "2026-03-14T06:20:00+01:00"),
            _item("Glycémie capillaire", "1,32 g/L", "2026-03-13T18:00:00+01:00"),
        ),
        attached=(
            _item("Dernière ordonnance", None, "2026-02-28"),
            _item("Électrocardiogramme de référence", None, "2025-06-11"),
        ),
        comment="Porte un bracelet d'identification au poignet droit. Aime qu'on l'appelle « Madame Œuvray ».",
        sources=("Patient/demo-resident-0001@3",),
    )
    return replace(record, **overrides)


def empty_record(**overrides: Any) -> ResidentRecord:
    """A record with the identity and the establishment only: every section prints "Non renseigné"."""
    base = make_record()
    return ResidentRecord(
        patient_id=base.patient_id,
        identity=overrides.pop("identity", base.identity),
        establishment=base.establishment,
        as_of=base.as_of,
        record_version=base.record_version,
        **overrides,
    )
