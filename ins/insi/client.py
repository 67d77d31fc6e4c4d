"""What the service asks INSi and what INSi answers: plain types and the ``InsiClient`` protocol, no I/O.

Two operations (WS-Addressing actions of the CNAM téléservice, DOMAIN.md §1.6): a search by the
identity traits, one given name per call, and a search from a carte Vitale read. INSi answers a
return code (``CR``): ``00`` exactly one identity (returned), ``01`` none, ``02`` several (none
returned).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol

OPERATION_TRAITS = "urn:ServiceIdentiteCertifiee:1.0.0:rechercherInsAvecTraitsIdentite"
OPERATION_VITALE = "urn:ServiceIdentiteCertifiee:1.0.0:rechercherInsAvecCarteVitale"

CR_FOUND = "00"
CR_NONE = "01"
CR_SEVERAL = "02"

# Bare OIDs of the matricule INS (FR Core; DOMAIN.md §1.2).
OID_NIR = "1.2.250.1.213.1.4.8"
OID_NIA = "1.2.250.1.213.1.4.9"
OID_TEST = "1.2.250.1.213.1.4.10"
OID_DEMO = "1.2.250.1.213.1.4.11"
INS_OIDS = frozenset({OID_NIR, OID_NIA, OID_TEST, OID_DEMO})


@dataclass(frozen=True)
class TraitsQuery:
    """A search by traits. Names are given as stored; the client normalises them for the wire."""

    birth_family: str
    given: str
    sex: str
    birth_date: date
    birth_place: str | None = None


@dataclass(frozen=True)
class VitaleQuery:
    """A search from a carte Vitale read (MatriculeIndividu, MatriculeOD, nom, date, rang)."""

    nir_individu: str
    nir_od: str
    birth_family: str
    birth_date: str
    birth_rank: int


@dataclass(frozen=True)
class InsiIdentity:
    """The identity INSi returns with ``CR 00``: the matricule INS, its OID and the INS traits."""

    matricule: str
    oid: str
    birth_family: str
    given_names: tuple[str, ...]
    sex: str
    birth_date: date
    birth_place: str
    previous: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class InsiResult:
    code: str
    identity: InsiIdentity | None
    simulated: bool = False

    @property
    def found(self) -> bool:
        return self.code == CR_FOUND


class InsiClient(Protocol):
    def search_by_traits(self, query: TraitsQuery) -> InsiResult: ...

    def search_by_vitale(self, query: VitaleQuery) -> InsiResult: ...
