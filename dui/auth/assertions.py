"""Client authentication by signed assertion: SMART Backend Services, "Authenticating to the token endpoint".

SMART App Launch 2.x, backend services (https://hl7.org/fhir/smart-app-launch/backend-services.html) and
RFC 7523 §3: the client signs a short-lived JWT with its private key; this server verifies it against the
public keys registered with ``dui clients create``:

- header: ``alg`` in ES384, RS384, ES256, RS256 (never ``none`` nor HMAC); ``kid`` naming a registered key;
- ``iss`` = ``sub`` = the client_id; ``aud`` = this token endpoint's URL;
- ``exp`` present and at most five minutes ahead; ``jti`` present (its single use is enforced by the
  ``used_jti`` table, see ``dui.auth.grants``).

Each refusal says what was wrong; the token endpoint answers it as ``invalid_client``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from dui.auth.accounts import ApiClient
from dui.auth.jwks import ALGORITHMS, JwksError, key_for
from dui.auth.tokens import LEEWAY, TokenError, decode, unverified_claims, unverified_header

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_LIFETIME = 300  # seconds: SMART says exp SHALL be no more than five minutes in the future
MAX_JTI_LENGTH = 255


@dataclass(frozen=True)
class VerifiedAssertion:
    client: ApiClient
    jti: str
    expires_at: int


def verify_assertion(assertion: str, token_url: str, find_client: Callable[[str], ApiClient | None],
                     now: datetime) -> VerifiedAssertion:
    """The client the assertion authenticates; ``TokenError`` (-> invalid_client) saying why not."""
    header = unverified_header(assertion)
    alg = header["alg"]
    if alg not in ALGORITHMS:
        raise TokenError(f"algorithm {alg} not accepted for client assertions; accepted: {', '.join(ALGORITHMS)}")
    claims = unverified_claims(assertion)
    client_id = claims.get("iss")
    if not isinstance(client_id, str) or not client_id:
        raise TokenError("the iss claim (the client_id) is missing")
    if claims.get("sub") != client_id:
        raise TokenError("sub must equal iss (the client_id)")
    client = find_client(client_id) if len(client_id) <= 64 else None
    if client is None:
        raise TokenError("unknown client")
    if not client.enabled:
        raise TokenError("disabled client")
    try:
        key = key_for(client.jwks, header.get("kid"), alg)
    except JwksError as exc:
        raise TokenError(str(exc)) from None
    verified = decode(assertion, key, [alg], issuer=client_id, audience=token_url, now=now,
                      required=["iss", "sub", "aud", "jti"])
    if verified["exp"] > now.timestamp() + MAX_LIFETIME + LEEWAY:
        raise TokenError(f"exp is more than {MAX_LIFETIME // 60} minutes ahead")
    jti = verified.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise TokenError(f"the jti claim must be a string of 1 to {MAX_JTI_LENGTH} characters")
    return VerifiedAssertion(client, jti, int(verified["exp"]))
