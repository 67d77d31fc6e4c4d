"""How the staff API writes the day's facts as FHIR: the codes, units and limits, in one place.

Vital signs use the LOINC codes and UCUM units of the FHIR R4 vital-signs profiles
(http://hl7.org/fhir/R4/observation-vitalsigns.html), so partners read them through ``/fhir`` as any vital sign.
Capillary glucose uses g/L, as French care teams write it. What has no standard code (the Algoplus and Doloplus
pain scales, a fall's circumstances, transmissions ciblées) uses this project's own CodeSystems under
``fhir_profiles.CANONICAL``.

The plausibility limits refuse a value no resident can have (a weight of 700 kg is a typing error, not a
measurement); a value inside them is recorded as given, and the rules in ``dui.staff.care`` may add a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_profiles import CANONICAL

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DUI_OBSERVATION = f"{CANONICAL}/CodeSystem/dui-observation"  # our codes, where no standard one fits
DUI_CARE = f"{CANONICAL}/CodeSystem/dui-care"  # categories of what staff record (transmissions, falls)


@dataclass(frozen=True)
class Measure:
    """A measure staff record: its API name, code, unit and plausibility limits (inclusive)."""

    name: str
    system: str
    code: str
    display: str
    unit: str  # UCUM
    low: float
    high: float
    category: str = "vital-signs"
    integer: bool = False
    also: tuple[tuple[str, str], ...] = ()  # more codings of the same system (code, display), after the first


MEASURES: dict[str, Measure] = {m.name: m for m in (
    Measure("weight_kg", LOINC, "29463-7", "Body weight", "kg", 20, 250),
    Measure("temperature_c", LOINC, "8310-5", "Body temperature", "Cel", 30, 45),
    Measure("heart_rate", LOINC, "8867-4", "Heart rate", "/min", 20, 250, integer=True),
    Measure("respiratory_rate", LOINC, "9279-1", "Respiratory rate", "/min", 4, 80, integer=True),
    # 2708-6 as well: the code R4's oxygensat profile requires of a vital-sign oxygen saturation
    Measure("spo2_percent", LOINC, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 50, 100,
            also=(("2708-6", "Oxygen saturation in Arterial blood"),)),
    Measure("glucose_g_per_l", LOINC, "2339-0", "Glucose [Mass/volume] in Blood", "g/L", 0.2, 6, "laboratory"),
)}
BLOOD_PRESSURE = ("85354-9", "Blood pressure panel with all children optional")
SYSTOLIC = Measure("systolic", LOINC, "8480-6", "Systolic blood pressure", "mm[Hg]", 50, 300, integer=True)
DIASTOLIC = Measure("diastolic", LOINC, "8462-4", "Diastolic blood pressure", "mm[Hg]", 20, 200, integer=True)

# Pain scales: (system, code, display, highest score). EN/EVA: the resident rates her pain from 0 to 10; Algoplus
# (0-5) and Doloplus (0-30) are the care team's observation of a resident who cannot say it.
PAIN_SCALES: dict[str, tuple[str, str, str, int]] = {
    "numeric": (LOINC, "72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported", 10),
    "algoplus": (DUI_OBSERVATION, "algoplus", "Échelle Algoplus", 5),
    "doloplus": (DUI_OBSERVATION, "doloplus", "Échelle Doloplus", 30),
}
PAIN_ALERT = {"numeric": 4, "algoplus": 2, "doloplus": 5}  # the scales' own thresholds of pain to treat

FALL = (SNOMED, "1912002", "Fall")
FALL_COMPONENTS = {  # the circumstances of a fall, as components of its Observation
    "place": "lieu", "activity": "activite", "injury": "blessure", "found_on_floor": "retrouve-au-sol",
    "witnessed": "temoin", "minutes_on_floor": "duree-au-sol",
}
FALL_SOURCE = {"declared": "declaration", "sensor": "capteur"}

TRANSMISSION = (DUI_CARE, "transmission-ciblee", "Transmission ciblée")
DAR_PART = f"{CANONICAL}/StructureDefinition/dui-dar-part"  # extension on Communication.payload: D, A or R
DAR_PARTS = ("donnees", "actions", "resultats")
FALL_ALERT_FLAG = (DUI_CARE, "alerte-chute", "Alerte chute (capteur)")

WEIGHT_WARNING_KG = 5.0  # a change of this much within WEIGHT_WARNING_DAYS is worth a look
WEIGHT_WARNING_DAYS = 7
VITALS_STALE_DAYS = 7  # "missing vitals": none recorded in this many days

# AGGIR: the GIR (groupe iso-ressources, 1 the most dependent to 6) of an evaluation, coded as TDDUI codes it: the
# answer of item ``resultat-eval`` of a ``tddui-questionnaire-response``, from terminologie-cisis (OID
# 1.2.250.1.213.1.1.4.322). The six codes are the value set JDV_GIR_CISIS (1.2.250.1.213.1.1.5.53) of the ANS
# TestContenuCDA material (jeuxDeValeurs/JDV_GIR_CISIS.xml): MED-339 GIR-1 ... MED-344 GIR-6; the TDDUI 2.2.0
# example QuestionnaireResponse aggir-pa codes MED-341 "GIR-3", the same.
CISIS = "https://smt.esante.gouv.fr/fhir/CodeSystem/terminologie-cisis"
GIR_CODES: dict[int, str] = {1: "MED-339", 2: "MED-340", 3: "MED-341", 4: "MED-342", 5: "MED-343", 6: "MED-344"}
# Points of each GIR in the GMP (GIR moyen pondéré): 1000, 840, 660, 420, 250, 70 for GIR 1 to 6, as the issue
# gives them (the regulatory text was not in the material at hand).
GIR_POINTS: dict[int, int] = {1: 1000, 2: 840, 3: 660, 4: 420, 5: 250, 6: 70}
# TDDUI 2.2.0 publishes the AGGIR PA grid as the questionnaire of SSIAD evaluations; an EHPAD's grid is the same one.
AGGIR_QUESTIONNAIRE = "https://interop.esante.gouv.fr/ig/fhir/tddui/Questionnaire/tddui-questionnaire-aggir-pa-ssiad"
# Evaluation identifiers: "3<FINESS>/<local id>-EVAL-<n>" in this system
EVALUATION_SYSTEM = "https://identifiant-medicosocial-evaluation.esante.gouv.fr"
EVALUATION_RESULT = "resultat-eval"  # the TDDUI item carrying the result (search parameter evaluation-result)
# PATHOS (the care needs of each resident, in points; PMP: their mean) has no code in the material at hand: a
# resident's PATHOS points are recorded with our own code (dui.staff.indicators, "PATHOS").
PATHOS_POINTS = (DUI_OBSERVATION, "pathos-points", "Points PATHOS du résident (coupe PATHOS)")
