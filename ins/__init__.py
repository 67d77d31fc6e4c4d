"""INS (Identité Nationale de Santé) rules as a plain, typed library.

No Flask, SQLAlchemy or ``dui`` import: the service depends on this package, never the reverse.
"""

from ins.identifiers import FR_CORE_IDENTIFIER_TYPES, InsIdentifier, InsKind, ins_kind
from ins.nir import NirError, control_key, is_valid

__all__ = [
    "FR_CORE_IDENTIFIER_TYPES",
    "InsIdentifier",
    "InsKind",
    "NirError",
    "control_key",
    "ins_kind",
    "is_valid",
]
