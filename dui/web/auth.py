"""The authorization server's HTTP edge: ``POST /auth/token``, ``GET /.well-known/smart-configuration``,
``GET /auth/jwks``.

RFC 6749 §5 (token answers and errors, ``Cache-Control: no-store``), SMART App Launch 2.x "Conformance"
(the configuration document, also served under the FHIR base where SMART clients look for it) and
"Backend Services". The grants themselves are in ``dui.auth.grants``; nothing here logs a token, an
assertion or a password.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from dui.audit import trail
from dui.auth import grants
from dui.auth.actor import ANONYMOUS, Actor
from dui.auth.jwks import ALGORITHMS
from dui.web import audit
from dui.web.context import services, unit_of_work

bp = Blueprint("auth", __name__)
logger = logging.getLogger("dui.auth")
SCOPES_SUPPORTED = ["system/*.cruds", "system/*.rs", "system/*.read", "system/*.write", "system/*.*",
                    "system/Patient.rs", "system/Observation.rs", "user/*.cruds", "user/*.rs"]


@bp.post("/auth/token")
def token() -> Response:
    if request.mimetype != "application/x-www-form-urlencoded":
        return _answer({"error": "invalid_request", "error_description": "the token request is a form "
                        "(Content-Type: application/x-www-form-urlencoded)"}, 400)
    form = {key: request.form.getlist(key) for key in request.form}
    auth = services().authenticator
    try:
        with unit_of_work(write=True) as session:
            answer = grants.token_request(auth, session, form)
    except grants.OAuthError as exc:
        logger.info("token refused", extra={"grant_type": _grant(form), "error": exc.error})
        _audit_login(ANONYMOUS, "denied", exc.status, f"{_grant(form)}: {exc.error}")
        return _answer(exc.body(), exc.status)
    actor = answer.actor
    logger.info("token issued", extra={"grant_type": _grant(form), "actor_kind": actor.kind, "actor_id": actor.id,
                                       "token_id": actor.token_id})
    _audit_login(actor, "success", 200, _grant(form))
    return _answer(answer.body, 200)


def _audit_login(actor: Actor, outcome: str, status: int, detail: str) -> None:
    """Every token asked for, given or refused, goes to the audit trail (the login of the API)."""
    svc = services()
    entry = trail.AuditEntry("login", outcome, actor, detail=detail[:64], status=status,
                             source=request.remote_addr, request_id=g.get("request_id"))
    with svc.unit_of_work(write=True) as session:
        trail.record(session, entry, svc.clock())
    audit.mark_recorded()


@bp.get("/.well-known/smart-configuration")
@bp.get("/fhir/.well-known/smart-configuration")
def smart_configuration() -> Response:
    auth = services().authenticator
    capabilities = ["client-confidential-asymmetric", "permission-v1", "permission-v2"]
    if auth.password_grant or auth.oidc:
        capabilities.append("permission-user")
    return jsonify({
        "issuer": auth.issuer_url,
        "jwks_uri": auth.issuer_url + "/auth/jwks",
        "token_endpoint": auth.token_url,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES384", "RS384", *[a for a in ALGORITHMS
                                                                                 if a not in ("ES384", "RS384")]],
        "grant_types_supported": grants.grant_types(auth),
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": capabilities,
    })


@bp.get("/auth/jwks")
def jwks() -> Response:
    """The public key that verifies this server's access tokens (its private half never leaves the server)."""
    return jsonify({"keys": [services().authenticator.signing_key.public_jwk()]})


def _answer(body: dict[str, Any], status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _grant(form: dict[str, list[str]]) -> str:
    value = (form.get("grant_type") or ["-"])[0]
    return value if value in (grants.CLIENT_CREDENTIALS, grants.PASSWORD, grants.TOKEN_EXCHANGE) else "other"
