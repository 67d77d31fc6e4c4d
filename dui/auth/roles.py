"""Staff roles of an EHPAD, as the DUI knows them.

One name per profession or function; the authorization policy (what each role may read and write) is
built on these names. Accounts (``dui users create --role``), OIDC issuers' role mappings and access
tokens only ever carry names from this list.
"""

from __future__ import annotations

MEDECIN = "medecin"  # médecin coordonnateur, médecin traitant
INFIRMIER = "infirmier"  # IDE, IDEC
AIDE_SOIGNANT = "aide-soignant"
AES_AMP = "aes-amp"  # accompagnant éducatif et social / aide médico-psychologique
PSYCHOLOGUE = "psychologue"
KINESITHERAPEUTE = "kinesitherapeute"
ADMINISTRATIF = "administratif"  # accueil, facturation
DIRECTION = "direction"
ADMINISTRATEUR = "administrateur"  # administrator of the system (accounts, clients, maintenance)

ROLES: tuple[str, ...] = (MEDECIN, INFIRMIER, AIDE_SOIGNANT, AES_AMP, PSYCHOLOGUE, KINESITHERAPEUTE, ADMINISTRATIF,
                          DIRECTION, ADMINISTRATEUR)


def is_role(name: str) -> bool:
    return name in ROLES


def check_role(name: str) -> str:
    """The role ``name``; ``ValueError`` naming the known roles when it is not one."""
    if name not in ROLES:
        raise ValueError(f"unknown role {name!r}; the roles are {', '.join(ROLES)}")
    return name
