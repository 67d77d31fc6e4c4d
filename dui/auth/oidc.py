"""Staff identities vouched for by an OpenID Connect issuer: Pro Santé Connect, or the establishment's IdP.

PGSSI-S (référentiel d'identification électronique): health professionals sign in with a means of
sufficient level, CPS / e-CPS through Pro Santé Connect. Their access or ID token, presented as a bearer
token (or exchanged at ``/auth/token``, RFC 8693, as CI-SIS SECU-API describes), is checked here against
an issuer described in the JSON file named by ``DUI_AUTH_OIDC_ISSUERS`` (format in docs/security.md):
issuer URL, accepted audiences, its public keys (inline or a file: nothing is fetched at run time),
algorithms, the accepted assurance levels (``acr``), and which claims give the subject, the DUI role and
the establishment (FINESS), or a fixed establishment for an establishment's own IdP.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dui.auth.actor import Actor
from dui.auth.finess import check_finess
from dui.auth.jwks import ASYMMETRIC, JwksError, key_for, validate_jwks
from dui.auth.roles import ROLES
from dui.auth.scopes import ScopeError, ScopeSet
from dui.auth.tokens import TokenError, decode, unverified_header
from dui.settings import SettingsError

DEFAULT_SCOPES = "user/*.cruds"
_KNOWN = frozenset({"name", "issuer", "audiences", "jwks", "jwks_file", "algorithms", "acr_values", "subject_claim",
                    "role_claim", "role_map", "roles", "establishment_claim", "establishment", "scopes"})


@dataclass(frozen=True)
class OidcIssuer:
    name: str
    issuer: str
    audiences: tuple[str, ...]
    jwks: dict[str, Any]
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    acr_values: tuple[str, ...] = ()  # accepted assurance levels; the token's acr must be one of them
    subject_claim: str = "sub"
    role_claim: str | None = None  # dotted path; its value (or values) mapped by role_map
    role_map: Mapping[str, str] = field(default_factory=dict)
    roles: tuple[str, ...] = ()  # roles given to every user of this issuer (when there is no role claim)
    establishment_claim: str | None = None  # dotted path to a FINESS
    establishment: str | None = None  # a fixed FINESS (the establishment's own IdP)
    scopes: ScopeSet = field(default_factory=lambda: ScopeSet.parse(DEFAULT_SCOPES))

    def actor(self, token: str, now: datetime) -> Actor:
        """The staff member the token stands for; ``TokenError`` saying why not."""
        header = unverified_header(token)
        alg = header["alg"]
        if alg not in self.algorithms:
            raise TokenError(f"algorithm {alg} not accepted from {self.name}; accepted: {', '.join(self.algorithms)}")
        try:
            key = key_for(self.jwks, header.get("kid"), alg, ASYMMETRIC)
        except JwksError as exc:
            raise TokenError(str(exc)) from None
        claims = decode(token, key, [alg], issuer=self.issuer, audience=list(self.audiences), now=now,
                        required=["iss", "aud"])
        acr = claims.get("acr")
        if self.acr_values and acr not in self.acr_values:
            raise TokenError(f"insufficient assurance level (acr {acr!r}); required: {', '.join(self.acr_values)}")
        subject = claim(claims, self.subject_claim)
        if not isinstance(subject, str) or not subject or len(subject) > 128:
            raise TokenError(f"the {self.subject_claim} claim (the user's id) is missing")
        roles = self._roles(claims)
        if not roles:
            raise TokenError(f"the token gives this user no DUI role ({self.name})")
        establishment = self._establishment(claims)
        if establishment is None:
            raise TokenError(f"the token gives this user no establishment ({self.name})")
        jti = claims.get("jti")
        return Actor("staff", subject, frozenset(roles), establishment, scopes=self.scopes,
                     client_id=claims.get("azp") if isinstance(claims.get("azp"), str) else None,
                     auth_method="oidc", issuer=self.issuer, token_id=jti if isinstance(jti, str) else None)

    def _roles(self, claims: dict[str, Any]) -> set[str]:
        if self.role_claim is None:
            return set(self.roles)
        value = claim(claims, self.role_claim)
        values = value if isinstance(value, list) else [value]
        mapped = {self.role_map.get(v, v if not self.role_map else "") for v in values if isinstance(v, str)}
        return {r for r in mapped if r in ROLES} or set(self.roles)

    def _establishment(self, claims: dict[str, Any]) -> str | None:
        if self.establishment_claim is not None:
            value = claim(claims, self.establishment_claim)
            if isinstance(value, str):
                try:
                    return check_finess(value[-9:] if len(value) == 10 and value[0] == "1" else value)
                except ValueError:
                    raise TokenError(f"the {self.establishment_claim} claim is not a FINESS number") from None
        return self.establishment


def claim(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``a.b.0.c``: list items by index), or None."""
    value: Any = claims
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def load_issuers(path: str | None) -> dict[str, OidcIssuer]:
    """The issuers of the JSON file at ``path`` (none when unset), by issuer URL; ``SettingsError`` if it is wrong."""
    if path is None:
        return {}
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"DUI_AUTH_OIDC_ISSUERS: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SettingsError(f"DUI_AUTH_OIDC_ISSUERS: {path} is not JSON: {exc}") from None
    items = doc.get("issuers") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise SettingsError(f'DUI_AUTH_OIDC_ISSUERS: {path} must hold {{"issuers": [...]}}')
    issuers: dict[str, OidcIssuer] = {}
    for n, item in enumerate(items):
        try:
            issuer = _issuer(item, Path(path).parent)
        except (ValueError, TypeError, KeyError) as exc:
            raise SettingsError(f"DUI_AUTH_OIDC_ISSUERS: issuer {n + 1} of {path}: {exc}") from None
        if issuer.issuer in issuers:
            raise SettingsError(f"DUI_AUTH_OIDC_ISSUERS: issuer {issuer.issuer} is described twice")
        issuers[issuer.issuer] = issuer
    return issuers


def _issuer(item: Any, folder: Path) -> OidcIssuer:
    if not isinstance(item, dict):
        raise ValueError("not a JSON object")
    unknown = sorted(set(item) - _KNOWN)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}")
    url = item["issuer"]
    if not isinstance(url, str) or not url.startswith("https://"):
        raise ValueError("issuer must be an https URL")
    audiences = item["audiences"]
    if isinstance(audiences, str):
        audiences = [audiences]
    if not audiences or not all(isinstance(a, str) and a for a in audiences):
        raise ValueError("audiences must name the audience(s) tokens are issued for (this service's client id)")
    if "jwks" in item:
        jwks_doc = item["jwks"]
    elif "jwks_file" in item:
        jwks_doc = json.loads((folder / item["jwks_file"]).read_text(encoding="utf-8"))
    else:
        raise ValueError("jwks or jwks_file is required (keys are never fetched at run time)")
    algorithms = tuple(item.get("algorithms", ("RS256", "ES256")))
    bad = [a for a in algorithms if a not in ASYMMETRIC]
    if bad or not algorithms:
        raise ValueError(f"algorithms {bad} not accepted; choose among {', '.join(ASYMMETRIC)}")
    try:
        jwks = validate_jwks(jwks_doc, {a: ASYMMETRIC[a] for a in algorithms})
    except JwksError as exc:
        raise ValueError(f"jwks: {exc}") from None
    acr_values = item.get("acr_values")
    if not isinstance(acr_values, list) or not acr_values or not all(isinstance(a, str) for a in acr_values):
        raise ValueError("acr_values must list the accepted assurance levels (e.g. PSC's eidas1)")
    role_map = item.get("role_map", {})
    roles = tuple(item.get("roles", ()))
    for role in [*role_map.values(), *roles]:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; the roles are {', '.join(ROLES)}")
    if item.get("role_claim") is None and not roles:
        raise ValueError("give role_claim (with role_map) or roles")
    establishment = item.get("establishment")
    if establishment is not None:
        establishment = check_finess(establishment)
    if item.get("establishment_claim") is None and establishment is None:
        raise ValueError("give establishment_claim or establishment (a FINESS)")
    try:
        scopes = ScopeSet.parse(item.get("scopes", DEFAULT_SCOPES))
    except ScopeError as exc:
        raise ValueError(f"scopes: {exc}") from None
    if scopes.contexts - {"user"}:
        raise ValueError("scopes of staff members are user/ scopes")
    return OidcIssuer(name=str(item.get("name", url)), issuer=url, audiences=tuple(audiences), jwks=jwks,
                      algorithms=algorithms, acr_values=tuple(acr_values),
                      subject_claim=item.get("subject_claim", "sub"), role_claim=item.get("role_claim"),
                      role_map=dict(role_map), roles=roles, establishment_claim=item.get("establishment_claim"),
                      establishment=establishment, scopes=scopes)
