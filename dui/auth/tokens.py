"""JWTs: the server's own access tokens (issue, verify), and the checks every incoming token goes through.

Access tokens (RFC 9068 in spirit) are ES256 JWTs signed with the server's key (``dui.auth.keys``):
``iss`` this server, ``aud`` the FHIR base, ``sub`` the actor's id, ``iat``/``exp`` (``DUI_AUTH_TOKEN_LIFETIME``),
``jti``, ``scope``, ``client_id``, and what authorization needs: ``kind``, ``roles``, ``establishment``
(FINESS), ``auth_method``. A resource server (this one) checks signature, issuer, audience and times, then
rebuilds the ``Actor`` from the claims.

Every refusal is a ``TokenError`` whose message says what was wrong (expired, not yet valid, wrong audience,
wrong issuer, unknown key, bad signature, ``alg: none``...) without quoting the token.
"""

from __future__ import annotations

import uuid
from collections.abc import Container, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt

from dui.auth.actor import Actor
from dui.auth.keys import SigningKey
from dui.auth.scopes import ScopeError, ScopeSet

LEEWAY = 30  # seconds of clock difference tolerated between machines
MAX_TOKEN_BYTES = 16 * 1024
KINDS = ("client", "staff", "device")


class TokenError(Exception):
    """A token is refused; the message (no secret in it) is safe to give back to the caller."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    scopes: ScopeSet
    jti: str


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, after the checks that need no key: size, shape, and an asymmetric ``alg``."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError("the token is too large")
    if token.count(".") != 2:
        raise TokenError("malformed token: not a signed JWT (three base64url parts)")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError("malformed token: its parts are not base64url-encoded JSON and signature") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise TokenError("unsigned token (alg: none) refused")
    if alg.upper().startswith("HS"):
        raise TokenError(f"{alg} (shared-secret signature) refused: tokens must be signed with a private key")
    if "crit" in header:
        raise TokenError("tokens with critical header parameters (crit) are not accepted")
    return header


def unverified_claims(token: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise TokenError("malformed token: unreadable claims") from None
    if not isinstance(claims, dict):
        raise TokenError("malformed token: the claims are not a JSON object")
    return claims


def decode(token: str, key: Any, algorithms: Sequence[str], *, issuer: str | Container[str],
           audience: str | Sequence[str] | None, now: datetime, required: Sequence[str] = (),
           leeway: int = LEEWAY) -> dict[str, Any]:
    """Verify signature, ``iss`` and ``aud`` (pyjwt), then ``exp``/``nbf``/``iat`` against ``now``; the claims."""
    options: dict[str, Any] = {"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                               "verify_aud": audience is not None, "require": ["exp", *required]}
    try:
        claims: dict[str, Any] = jwt.decode(token, key, algorithms=list(algorithms), issuer=issuer,
                                            audience=audience, options=options)  # type: ignore[arg-type]
    except jwt.InvalidSignatureError:
        raise TokenError("bad signature") from None
    except jwt.InvalidAlgorithmError:
        raise TokenError(f"algorithm not accepted; accepted: {', '.join(algorithms)}") from None
    except jwt.InvalidAudienceError:
        raise TokenError("wrong audience (aud)") from None
    except jwt.InvalidIssuerError:
        raise TokenError("wrong issuer (iss)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"the {exc.claim} claim is missing") from None
    except jwt.PyJWTError as exc:
        raise TokenError(f"invalid token: {type(exc).__name__}") from None
    check_times(claims, now, leeway)
    return claims


def check_times(claims: dict[str, Any], now: datetime, leeway: int = LEEWAY) -> None:
    """``exp`` (required), ``nbf`` and ``iat`` against ``now``, with ``leeway`` seconds of tolerance."""
    instant = now.timestamp()
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise TokenError(f"the {name} claim must be a number of seconds")
    if claims.get("exp") is None:
        raise TokenError("the exp claim is missing")
    if claims["exp"] + leeway <= instant:
        raise TokenError("expired token")
    if claims.get("nbf") is not None and claims["nbf"] - leeway > instant:
        raise TokenError("token not yet valid (nbf in the future)")
    if claims.get("iat") is not None and claims["iat"] - leeway > instant:
        raise TokenError("token not yet valid (issued in the future)")


class TokenIssuer:
    """Issues and verifies this server's access tokens."""

    def __init__(self, key: SigningKey, issuer: str, audience: str, lifetime: int) -> None:
        self.key = key
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime

    def issue(self, actor: Actor, now: datetime) -> IssuedToken:
        iat = int(now.timestamp())
        jti = uuid.uuid4().hex
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.audience, "sub": actor.id, "iat": iat, "nbf": iat,
            "exp": iat + self.lifetime, "jti": jti, "scope": str(actor.scopes), "client_id": actor.client_id,
            "kind": actor.kind, "roles": sorted(actor.roles), "establishment": actor.establishment,
            "auth_method": actor.auth_method,
        }
        if actor.issuer and actor.issuer != self.issuer:
            claims["idp"] = actor.issuer  # the OIDC issuer that vouched for the staff member
        token = jwt.encode(claims, self.key.private_key, algorithm=self.key.algorithm,
                           headers={"kid": self.key.kid, "typ": "at+jwt"})
        return IssuedToken(token, self.lifetime, actor.scopes, jti)

    def verify(self, token: str, now: datetime) -> Actor:
        """The actor a token of this server stands for; ``TokenError`` if it is not a valid one."""
        header = unverified_header(token)
        if header.get("kid") != self.key.kid:
            raise TokenError("unknown key (kid): not signed by this server's current key")
        claims = decode(token, self.key.public_key, [self.key.algorithm], issuer=self.issuer,
                        audience=self.audience, now=now, required=["iat", "jti", "sub", "scope"])
        kind = claims.get("kind")
        if kind not in KINDS or not isinstance(claims["sub"], str):
            raise TokenError("the token does not name a client or a staff member")
        roles = claims.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise TokenError("the roles claim must be a list of names")
        try:
            scopes = ScopeSet.parse(claims["scope"])
        except (ScopeError, AttributeError):
            raise TokenError("the scope claim is not valid") from None
        return Actor(kind, claims["sub"], frozenset(roles), _str_or_none(claims.get("establishment")), scopes=scopes,
                     client_id=_str_or_none(claims.get("client_id")),
                     auth_method=_str_or_none(claims.get("auth_method")),
                     issuer=_str_or_none(claims.get("idp")) or self.issuer, token_id=str(claims["jti"]))


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
