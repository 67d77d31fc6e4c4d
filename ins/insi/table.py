"""The fictitious identities the simulator and the in-memory twin know, and the one matching rule they share.

Every identity here is invented for development and tests. Matricules carry valid keys, are
consistent with sex, year and month of birth and place of birth, and use the TEST OID
(``1.2.250.1.213.1.4.10``) so that they can never be mistaken for production INS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from ins.insi.client import CR_FOUND, CR_NONE, CR_SEVERAL, OID_TEST, InsiIdentity
from ins.insi.wire import TraitsFields, VitaleFields
from ins.nir import control_key

Kind = Literal["NIR", "NIA"]
Behaviour = Literal["normal", "fault", "slow"]


@dataclass(frozen=True)
class SimulatedIdentity:
    """One row of the simulated national register.

    ``kind`` flags the NIA case (an identity whose matricule went from an NIA to a NIR; the OID stays
    TEST). ``od_matricule`` is the ouvrant droit's matricule on the carte Vitale (None: the person's
    own), ``birth_rank`` the rang de naissance on the card. ``behaviour`` makes a search that finds
    this identity answer a service fault (``fault``) or answer late (``slow``).
    """

    label: str
    identity: InsiIdentity
    kind: Kind = "NIR"
    behaviour: Behaviour = "normal"
    od_matricule: str | None = None
    birth_rank: int = 1


def _nir(first13: str) -> str:
    return first13 + control_key(first13)


def _person(label: str, first13: str, family: str, given: tuple[str, ...], sex: str, born: date, place: str, *,
            kind: Kind = "NIR", behaviour: Behaviour = "normal", previous: tuple[tuple[str, str], ...] = (),
            od_matricule: str | None = None, birth_rank: int = 1) -> SimulatedIdentity:
    identity = InsiIdentity(_nir(first13), OID_TEST, family, given, sex, born, place, previous)
    return SimulatedIdentity(label, identity, kind, behaviour, od_matricule, birth_rank)


LYON = _person("lyon-three-given-names", "2380469123045", "BERTHIER", ("MARIE", "HELENE", "JEANNE"), "F",
               date(1938, 4, 12), "69123")
CORSICA = _person("corsica", "141112A004012", "SANTONI", ("PAUL", "ANTOINE"), "M", date(1941, 11, 3), "2A004")
NIA_TO_NIR = _person("born-abroad-nia-to-nir", "2470699352101", "HADDAD", ("LEILA", "AMINA"), "F",
                     date(1947, 6, 21), "99352", kind="NIA", previous=((_nir("2470699352907"), OID_TEST),))
HOMONYM_PARIS = _person("homonym-paris", "1350175115123", "MARTIN", ("JEAN",), "M", date(1935, 1, 15), "75115")
HOMONYM_BORDEAUX = _person("homonym-bordeaux", "1350133063456", "MARTIN", ("JEAN", "LOUIS"), "M",
                           date(1935, 1, 15), "33063")
APOSTROPHE_HYPHEN = _person("apostrophe-hyphen", "1500894028077", "N'GUESSAN", ("JEAN-PIERRE", "KOUASSI"), "M",
                            date(1950, 8, 30), "94028")
AYANT_DROIT = _person("ayant-droit", "243052B033088", "ROSSI", ("ANNA",), "F", date(1943, 5, 5), "2B033",
                      od_matricule=CORSICA.identity.matricule, birth_rank=1)
SERVICE_FAULT = _person("service-fault", "1400259350021", "PANNE", ("SIMON",), "M", date(1940, 2, 2), "59350",
                        behaviour="fault")
SLOW_ANSWER = _person("slow-answer", "2440931555033", "LENTEUR", ("CLAIRE",), "F", date(1944, 9, 9), "31555",
                      behaviour="slow")

DEFAULT_IDENTITIES: tuple[SimulatedIdentity, ...] = (
    LYON, CORSICA, NIA_TO_NIR, HOMONYM_PARIS, HOMONYM_BORDEAUX, APOSTROPHE_HYPHEN, AYANT_DROIT, SERVICE_FAULT,
    SLOW_ANSWER,
)


def simulated(label: str, identities: Sequence[SimulatedIdentity] = DEFAULT_IDENTITIES) -> SimulatedIdentity:
    """The identity called ``label`` (``KeyError`` if there is none)."""
    for entry in identities:
        if entry.label == label:
            return entry
    raise KeyError(label)


# The Receiver fault a ``fault`` identity triggers: the shape of INSi's "service temporarily unavailable".
SERVICE_FAULT_SUBCODE = "siram_40"
SERVICE_FAULT_DETAIL_CODE = "insi_102"
SERVICE_FAULT_REASON = "Le service est temporairement inaccessible (simulateur). Renouvelez la demande plus tard."
SERVICE_FAULT_DETAIL = "Erreur technique simulée du service de recherche."


@dataclass(frozen=True)
class Answer:
    """What the register answers: the CR code and, with ``00``, the one identity found."""

    code: str
    entry: SimulatedIdentity | None


def _answer(matches: list[SimulatedIdentity]) -> Answer:
    if not matches:
        return Answer(CR_NONE, None)
    if len(matches) > 1:
        return Answer(CR_SEVERAL, None)
    return Answer(CR_FOUND, matches[0])


def answer_traits(identities: Sequence[SimulatedIdentity], fields: TraitsFields) -> Answer:
    """Search by traits: birth family (exact), the given name among the birth given names, sex, birth
    date, and the birth place when one is given."""
    return _answer([
        e for e in identities
        if e.identity.birth_family == fields.nom
        and fields.prenom in e.identity.given_names
        and e.identity.sex == fields.sexe
        and e.identity.birth_date.isoformat() == fields.date_naissance
        and (fields.lieu_naissance is None or e.identity.birth_place == fields.lieu_naissance)
    ])


def answer_vitale(identities: Sequence[SimulatedIdentity], fields: VitaleFields) -> Answer:
    """Search from a carte Vitale: the person's matricule or, when the card gives none (an ayant droit),
    the ouvrant droit's matricule and the birth rank; then birth family and birth date."""

    def holder(e: SimulatedIdentity) -> bool:
        if fields.matricule_individu:
            return e.identity.matricule[:13] == fields.matricule_individu[:13]
        od = e.od_matricule or e.identity.matricule
        return od[:13] == fields.matricule_od[:13] and str(e.birth_rank) == fields.rang

    return _answer([
        e for e in identities
        if holder(e)
        and e.identity.birth_family == fields.nom
        and e.identity.birth_date.isoformat() == fields.date_naissance
    ])
