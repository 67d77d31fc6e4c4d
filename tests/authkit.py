"""Test helpers for authentication: client keys and their JWKS, client assertions, OIDC issuer tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# FINESS of the demo establishments (dui.demo.identities.finess("69", "000142") and ("69", "000266")).
TILLEULS = "690001425"
PARC = "690002662"


@cache
def ec384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@cache
def ec256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@cache
def rsa2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def other_rsa2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def other_ec384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def public_jwk(key: PrivateKey, kid: str, alg: str | None = None) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk = {k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "y", "n", "e")}
    jwk["kid"] = kid
    if alg:
        jwk["alg"] = alg
    return jwk


def client_jwks() -> dict[str, Any]:
    """A client's key set: EC P-384 (kid ec-1, ES384) and RSA 2048 (kid rsa-1, RS384 or RS256)."""
    return {"keys": [public_jwk(ec384(), "ec-1", "ES384"), public_jwk(rsa2048(), "rsa-1")]}


def write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def sign(claims: dict[str, Any], key: PrivateKey, alg: str, kid: str | None, **header: Any) -> str:
    headers = {**({"kid": kid} if kid is not None else {}), **header}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def assertion(client_id: str, token_url: str, *, key: PrivateKey | None = None, alg: str = "ES384",
              kid: str | None = "ec-1", exp_in: int = 240, jti: str | None = None, drop: tuple[str, ...] = (),
              **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"iss": client_id, "sub": client_id, "aud": token_url, "iat": now, "exp": now + exp_in,
                            "jti": jti or uuid.uuid4().hex, **claims}
    for name in drop:
        body.pop(name, None)
    return sign(body, key or ec384(), alg, kid)


def unsigned(claims: dict[str, Any], kid: str | None = "ec-1") -> str:
    """An ``alg: none`` token."""
    header = {"alg": "none", "typ": "JWT", **({"kid": kid} if kid else {})}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."


def hmac_signed(claims: dict[str, Any], secret: bytes, kid: str | None = "ec-1") -> str:
    """An HS256 token, e.g. keyed with a public key's text (the algorithm-confusion attack)."""
    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def token_form(client_id: str, token_url: str, scope: str = "system/Patient.rs", **kw: Any) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(client_id, token_url, **kw), "scope": scope}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- an OIDC issuer in the style of Pro Santé Connect -----------------------------------------------------------

PSC_ISSUER = "https://auth.psc.test/auth/realms/esante-wallet"
PSC_AUDIENCE = "dui-ehpad-test"


def psc_config(tmp: Path) -> Path:
    """An issuers file: a PSC-like issuer (profession code -> role, FINESS from a claim) and an establishment IdP."""
    doc = {"issuers": [
        {"name": "psc", "issuer": PSC_ISSUER, "audiences": [PSC_AUDIENCE],
         "jwks": {"keys": [public_jwk(rsa2048(), "psc-1", "RS256")]}, "algorithms": ["RS256"],
         "acr_values": ["eidas1"], "subject_claim": "SubjectNameID",
         "role_claim": "SubjectRefPro.exercices.0.codeProfession", "role_map": {"10": "medecin", "60": "infirmier"},
         "establishment_claim": "SubjectRefPro.exercices.0.activities.0.structureId"},
        {"name": "ehpad-idp", "issuer": "https://idp.ehpad.test", "audiences": "dui",
         "jwks_file": "idp-jwks.json", "algorithms": ["ES256"], "acr_values": ["mfa"],
         "role_claim": "dui_roles", "establishment": TILLEULS},
    ]}
    write_json(tmp / "idp-jwks.json", {"keys": [public_jwk(ec256(), "idp-1")]})
    return write_json(tmp / "oidc-issuers.json", doc)


def psc_token(*, profession: str = "10", acr: str = "eidas1", aud: str = PSC_AUDIENCE, exp_in: int = 600,
              kid: str = "psc-1", key: PrivateKey | None = None, structure: str = "1" + TILLEULS,
              **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": PSC_ISSUER, "aud": aud, "sub": "f:550e8400", "SubjectNameID": "810001234567", "acr": acr,
            "iat": now, "exp": now + exp_in, "jti": uuid.uuid4().hex,
            "SubjectRefPro": {"exercices": [{"codeProfession": profession,
                                             "activities": [{"structureId": structure}]}]}, **claims}
    return sign(body, key or rsa2048(), "RS256", kid)
