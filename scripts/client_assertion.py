"""A SMART Backend Services client's two needs, for trying the token endpoint by hand (README, "Get a token").

    python scripts/client_assertion.py jwks KEY.pem > client.jwks.json
        the JSON Web Key Set of the private key's public half (kid: its RFC 7638 thumbprint), to register with
        `dui clients create NAME --scope ... --jwks-file client.jwks.json`
    python scripts/client_assertion.py assertion KEY.pem --client-id ID --token-url URL
        a signed client assertion (iss = sub = ID, aud = URL, exp in 4 minutes, a fresh jti), for
        `POST /auth/token` with grant_type=client_credentials

KEY.pem: an EC P-384 or P-256 key (ES384 / ES256), or an RSA key of 2048 bits or more (RS384), e.g.
`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out client-key.pem`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def _load(path: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        sys.exit(f"{path}: an EC or RSA private key is expected")
    return key


def _algorithm(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS384"
    algs = {"secp384r1": "ES384", "secp256r1": "ES256"}
    if key.curve.name not in algs:
        sys.exit(f"EC curve {key.curve.name} is not accepted; use P-384 or P-256")
    return algs[key.curve.name]


def public_jwk(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> dict[str, Any]:
    algorithm = jwt.get_algorithm_by_name(_algorithm(key))
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    return {**{m: jwk[m] for m in members}, "kid": kid, "alg": _algorithm(key), "use": "sig"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("jwks", help="print the JWKS of the key's public half")
    keys.add_argument("key")
    make = sub.add_parser("assertion", help="print a signed client assertion")
    make.add_argument("key")
    make.add_argument("--client-id", required=True)
    make.add_argument("--token-url", required=True)
    make.add_argument("--lifetime", type=int, default=240, help="seconds (at most 300)")
    args = parser.parse_args(argv)
    key = _load(args.key)
    jwk = public_jwk(key)
    if args.command == "jwks":
        print(json.dumps({"keys": [jwk]}, indent=2))
        return
    now = int(time.time())
    claims = {"iss": args.client_id, "sub": args.client_id, "aud": args.token_url, "iat": now,
              "exp": now + args.lifetime, "jti": uuid.uuid4().hex}
    print(jwt.encode(claims, key, algorithm=jwk["alg"], headers={"kid": jwk["kid"], "typ": "JWT"}))


if __name__ == "__main__":
    main()
