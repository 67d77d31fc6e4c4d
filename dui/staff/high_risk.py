"""Médicaments à risque: the ATC classes whose doses the administration plan marks high-risk, and whose
administration a second nurse double-checks (``dui.staff.administrations``).

The table claims no more than its sources say. Each entry names the ones it rests on:

- ``ARRETE_2011``: arrêté du 6 avril 2011 relatif au management de la qualité de la prise en charge médicamenteuse
  et aux médicaments dans les établissements de santé, article 2, which defines the "médicaments à risque" and gives
  as examples: anticoagulants, antiarythmiques, agonistes adrénergiques IV, digitaliques IV, insuline, anticancéreux,
  solutions d'électrolytes concentrées.
- ``NEVER_EVENTS``: the list of "événements qui ne devraient jamais arriver" (circulaire DGOS du 14 février 2012,
  annexe III), brought up to date by the note d'information DGOS/RI2/2024/75 du 23 mai 2024 (Bulletin officiel santé
  2024/11) with the ANSM and the OMéDIT: errors with anticoagulants, with injectable potassium chloride, with the
  rhythm of oral or subcutaneous methotrexate outside oncology, overdoses of anticancer drugs, errors with insulin,
  and (2024) with methadone and colchicine; the programming of pumps delivering morphine-like drugs (opioids).
- ``ISMP_LTC``: ISMP List of High-Alert Medications in Long-Term Care (LTC) Settings (Institute for Safe Medication
  Practices, 2021), written for nursing homes: opioids, digoxin (oral and parenteral), insulin, antithrombotic agents,
  oral methotrexate. Cited where the French texts name a drug for one route only (digitaliques IV; opioids in
  pumps) and EHPAD practice gives it orally.

Deliberately not in the table: antiplatelet agents (B01AC: aspirin, clopidogrel), which the French texts do not name
among the anticoagulants; oral potassium chloride (A12BA01: the never event is the injectable one); sulfonylureas and
the other classes only the ISMP list names; medicines whose risk the texts tie to a route or a setting the plan does
not hold (IV lidocaine, anaesthesia drugs, medical gases, adrenergic agonists IV). An establishment that wants more
(its own list of "médicaments à risque", as the arrêté asks each one to draw up) adds rows here.

Matching is on the prescription's ATC code (WHO ATC, ``http://www.whocc.no/atc``), by prefix: ``B01AF01``
(rivaroxaban) is in ``B01AF``. A prescription written as free text only, with no ATC code, is not matched.
"""

from __future__ import annotations

from dataclasses import dataclass

ARRETE_2011 = "arrêté du 6 avril 2011, art. 2"
NEVER_EVENTS = "never events DGOS 2012, mis à jour en 2024 (note DGOS/RI2/2024/75)"
ISMP_LTC = "ISMP High-Alert Medications in Long-Term Care, 2021"


@dataclass(frozen=True)
class RiskClass:
    """An ATC class (or substance) of médicaments à risque, and the sources that name it."""

    atc: str  # an ATC code, matched as a prefix
    label: str  # French, as the care team reads it
    sources: tuple[str, ...]


HIGH_RISK: tuple[RiskClass, ...] = (
    RiskClass("B01AA", "Anticoagulant (antivitamine K)", (ARRETE_2011, NEVER_EVENTS)),
    RiskClass("B01AB", "Anticoagulant (héparine)", (ARRETE_2011, NEVER_EVENTS)),
    RiskClass("B01AE", "Anticoagulant (inhibiteur direct de la thrombine)", (ARRETE_2011, NEVER_EVENTS)),
    RiskClass("B01AF", "Anticoagulant (inhibiteur direct du facteur Xa)", (ARRETE_2011, NEVER_EVENTS)),
    RiskClass("B01AX05", "Anticoagulant (fondaparinux)", (ARRETE_2011, NEVER_EVENTS)),
    RiskClass("A10A", "Insuline", (ARRETE_2011, NEVER_EVENTS, ISMP_LTC)),
    RiskClass("L01", "Anticancéreux", (ARRETE_2011, NEVER_EVENTS)),  # with methotrexate L01BA01
    RiskClass("L04AX03", "Méthotrexate (hors cancérologie)", (NEVER_EVENTS, ISMP_LTC)),
    RiskClass("C01AA", "Digitalique (digoxine)", (ARRETE_2011, ISMP_LTC)),
    RiskClass("C01B", "Antiarythmique", (ARRETE_2011,)),
    RiskClass("B05XA", "Solution d'électrolytes concentrée (dont chlorure de potassium injectable)",
              (ARRETE_2011, NEVER_EVENTS)),
    RiskClass("N02A", "Opioïde", (ISMP_LTC, NEVER_EVENTS)),
    RiskClass("N07BC02", "Méthadone", (NEVER_EVENTS,)),
    RiskClass("M04AC01", "Colchicine", (NEVER_EVENTS,)),
)


def risk_class(atc: str | None) -> RiskClass | None:
    """The most specific class of the table that ``atc`` belongs to, or None (no code, or not at risk)."""
    if not atc:
        return None
    code = atc.strip().upper()
    found = [c for c in HIGH_RISK if code.startswith(c.atc)]
    return max(found, key=lambda c: len(c.atc)) if found else None
