"""JSON Web Key Sets of API clients and OIDC issuers: what is accepted, and the key for a token.

RFC 7517 (JWK), RFC 7518 §3 and §6 (algorithms and key types). A registered set holds public keys only,
each with a ``kid``; EC keys on P-256 or P-384, RSA keys of 2048 bits or more. Signatures are accepted in
ES256, ES384, RS256 and RS384 (SMART Backend Services requires ES384 and RS384); ``none`` and HMAC are
never accepted: they would let anyone who knows a public key, or nobody at all, sign.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWTError

# alg -> (kty, crv for EC)
ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
}
# What an OIDC issuer may be configured to use (never none, never HMAC).
ASYMMETRIC: dict[str, tuple[str, str | None]] = {
    **ALGORITHMS,
    "ES512": ("EC", "P-521"),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
}
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_RSA_BITS = 2048
MAX_KEYS = 20


class JwksError(ValueError):
    """A key set, or one of its keys, is not acceptable."""


def parse_jwks(text: str | bytes) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JwksError(f"not JSON: {exc}") from None
    return validate_jwks(doc)


def validate_jwks(doc: Any, algorithms: dict[str, tuple[str, str | None]] = ALGORITHMS) -> dict[str, Any]:
    """The set, checked: ``{"keys": [...]}`` of public signing keys with distinct ``kid``s; ``JwksError``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise JwksError('a JWKS is a JSON object {"keys": [...]} with at least one key')
    if len(doc["keys"]) > MAX_KEYS:
        raise JwksError(f"at most {MAX_KEYS} keys")
    kids: set[str] = set()
    for n, jwk in enumerate(doc["keys"]):
        where = f"key {n + 1}"
        if not isinstance(jwk, dict):
            raise JwksError(f"{where} is not a JSON object")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 255:
            raise JwksError(f"{where} has no kid (a non-empty string): tokens name their key by kid")
        where = f"key {kid!r}"
        if kid in kids:
            raise JwksError(f"{where} appears twice")
        kids.add(kid)
        private = sorted(PRIVATE_MEMBERS & jwk.keys())
        if private:
            raise JwksError(f"{where} holds private members ({', '.join(private)}): register the public key only")
        kty = jwk.get("kty")
        if kty not in ("EC", "RSA"):
            raise JwksError(f"{where} has kty {kty!r}; accepted: EC, RSA")
        if jwk.get("use", "sig") != "sig":
            raise JwksError(f"{where} has use {jwk.get('use')!r}; a signing key has use 'sig'")
        ops = jwk.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            raise JwksError(f"{where} has key_ops without 'verify'")
        alg = jwk.get("alg")
        if alg is not None and alg not in algorithms:
            raise JwksError(f"{where} has alg {alg!r}; accepted: {', '.join(algorithms)}")
        candidates = [alg] if alg else [a for a, (t, _) in algorithms.items() if t == kty]
        if not any(_compatible(jwk, a, algorithms) for a in candidates):
            raise JwksError(f"{where}: no accepted algorithm fits it ({_describe(jwk)})")
        if kty == "RSA" and _rsa_bits(jwk) < MIN_RSA_BITS:
            raise JwksError(f"{where} is an RSA key of {_rsa_bits(jwk)} bits; at least {MIN_RSA_BITS} are required")
        try:
            PyJWK(jwk, algorithm=next(a for a in candidates if _compatible(jwk, a, algorithms)))
        except (PyJWTError, ValueError, TypeError, binascii.Error) as exc:
            raise JwksError(f"{where} is not a valid {kty} public key: {exc}") from None
    return {"keys": [dict(k) for k in doc["keys"]]}


def key_for(jwks: dict[str, Any], kid: str | None, alg: str,
            algorithms: dict[str, tuple[str, str | None]] = ALGORITHMS) -> PyJWK:
    """The key of ``jwks`` named ``kid`` that can verify ``alg``; ``JwksError`` saying why there is none."""
    if alg not in algorithms:
        raise JwksError(f"algorithm {alg!r} is not accepted; accepted: {', '.join(algorithms)}")
    if not kid:
        raise JwksError("the token header has no kid")
    for jwk in jwks.get("keys", []):
        if jwk.get("kid") == kid:
            if not _compatible(jwk, alg, algorithms):
                raise JwksError(f"key {kid!r} ({_describe(jwk)}) cannot verify {alg}")
            return PyJWK(jwk, algorithm=alg)
    raise JwksError(f"unknown key: no key {kid!r} is registered")


def _compatible(jwk: dict[str, Any], alg: str, algorithms: dict[str, tuple[str, str | None]]) -> bool:
    if alg not in algorithms or jwk.get("alg", alg) != alg:
        return False
    kty, crv = algorithms[alg]
    return bool(jwk.get("kty") == kty and (crv is None or jwk.get("crv") == crv))


def _describe(jwk: dict[str, Any]) -> str:
    return " ".join(str(jwk[m]) for m in ("kty", "crv", "alg") if m in jwk)


def _rsa_bits(jwk: dict[str, Any]) -> int:
    n = jwk.get("n")
    if not isinstance(n, str):
        return 0
    try:
        raw = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    except (ValueError, binascii.Error):
        return 0
    return int.from_bytes(raw, "big").bit_length()
