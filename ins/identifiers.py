"""INS identifier kinds as FHIR identifiers (FR Core ``fr-core-patient-ins``, versions 2.1.0 and 2.2.0).

The matricule INS is a NIR or an NIA. Test and demonstration identities have their own OIDs. The NSS
(the number on a carte Vitale) shares the NIR's OID but is not an INS: only ``identifier.type``
tells them apart, so an identifier is an INS when its type says so, or when its system is one that
only INS identifiers use (NIA, TEST, DEMO).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

FR_CORE_IDENTIFIER_TYPES = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"


class InsKind(Enum):
    """The four kinds of matricule INS, with their FHIR system and FR Core type code."""

    NIR = ("urn:oid:1.2.250.1.213.1.4.8", "INS-NIR", "production")
    NIA = ("urn:oid:1.2.250.1.213.1.4.9", "INS-NIA", "production")
    TEST = ("urn:oid:1.2.250.1.213.1.4.10", "INS-NIR-TEST", "test")
    DEMO = ("urn:oid:1.2.250.1.213.1.4.11", "INS-NIR-DEMO", "demo")

    def __init__(self, system: str, type_code: str, usage: str) -> None:
        self.system = system
        self.type_code = type_code
        self.usage = usage

    @property
    def is_production(self) -> bool:
        return self.usage == "production"


_BY_SYSTEM = {k.system: k for k in InsKind}
_BY_TYPE = {k.type_code: k for k in InsKind}
# Systems no identifier other than an INS uses (the NIR's OID is shared with the NSS).
_INS_ONLY_SYSTEMS = frozenset({InsKind.NIA.system, InsKind.TEST.system, InsKind.DEMO.system})


@dataclass(frozen=True)
class InsIdentifier:
    kind: InsKind
    value: str


def ins_kind(system: str | None, type_codes: Iterable[tuple[str | None, str | None]]) -> InsKind | None:
    """The INS kind of an identifier, given its system and its type codings (system, code).

    Returns None for anything that is not an INS (an NSS, a local IPP...).
    """
    if system is None:
        return None
    kind = _BY_SYSTEM.get(system)
    if kind is None:
        return None
    for coding_system, code in type_codes:
        if coding_system == FR_CORE_IDENTIFIER_TYPES and _BY_TYPE.get(code or "") is kind:
            return kind
    return kind if system in _INS_ONLY_SYSTEMS else None
