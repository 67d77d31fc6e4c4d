"""INS (Identité Nationale de Santé) rules as a plain, typed library.

No Flask, SQLAlchemy or ``dui`` import: the service depends on this package, never the reverse.
"""

from ins.errors import InsError, InsiError, InsiFault, InsiUnavailable, NirError, TraitError, TransitionError
from ins.identifiers import FR_CORE_IDENTIFIER_TYPES, InsIdentifier, InsKind, ins_kind
from ins.nir import Matricule, control_key, is_valid, parse_matricule
from ins.status import Event, Evidence, IdentityStatus, StatusChange, StatusHistory
from ins.traits import InsTraits, TraitProblem

__all__ = [
    "FR_CORE_IDENTIFIER_TYPES",
    "Event",
    "Evidence",
    "IdentityStatus",
    "InsError",
    "InsIdentifier",
    "InsKind",
    "InsTraits",
    "InsiError",
    "InsiFault",
    "InsiUnavailable",
    "Matricule",
    "NirError",
    "StatusChange",
    "StatusHistory",
    "TraitError",
    "TraitProblem",
    "TransitionError",
    "control_key",
    "ins_kind",
    "is_valid",
    "parse_matricule",
]
